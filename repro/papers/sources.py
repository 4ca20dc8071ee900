"""The documents every paper number in the tables comes from, named in full.

A ``PaperValue`` carries the key of its source; the generated tables show that key per cell and
print a legend built from ``SOURCES`` under every table. docs/papers.md describes each document
and what was read from it. Order of trust: the paper itself (not readable here), the same
authors' reprint (FPGM), then third-party transcriptions (ShrinkBench), then abstracts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    key: str
    kind: str        # primary | reprint | transcription | abstract
    citation: str    # title, authors, venue, arXiv id
    where: str       # the part of the document (table, file) the numbers come from

    def legend(self) -> str:
        return f"[{self.key}] {self.citation}; {self.where} ({self.kind})"


_FPGM = ("Y. He, P. Liu, Z. Wang, Z. Hu, Y. Yang, \"Filter Pruning via Geometric Median for Deep "
         "Convolutional Neural Networks Acceleration\", CVPR 2019, arXiv:1811.00250")
_SFP = ("Y. He, G. Kang, X. Dong, Y. Fu, Y. Yang, \"Soft Filter Pruning for Accelerating Deep "
        "Convolutional Neural Networks\", IJCAI 2018, arXiv:1808.06866")
_SB = ("D. Blalock, J. J. Gonzalez Ortiz, J. Frankle, J. Guttag, \"What is the State of Neural Network "
       "Pruning?\" (ShrinkBench), MLSys 2020, arXiv:2003.03033")
_SNF = ("P. Liu, Y. Yue, Y. Guo, X. Tao, X. Zhou, \"SNF: Filter Pruning via Searching the Proper Number of "
        "Filters\", arXiv:2112.07282, 2021")

SOURCES = {s.key: s for s in (
    Source("FPGM-T1", "reprint", _FPGM, "Table 1 (CIFAR-10), SFP's rows reprinted by the same first author"),
    Source("FPGM-T2", "reprint", _FPGM, "Table 2 (ImageNet), SFP's rows reprinted by the same first author; "
                                        "its column 'Fine-tune?' means initialised from a pre-trained model"),
    Source("SB", "transcription", _SB, "repository JJGO/shrinkbench, file analysis/assets/existing-results/"
                                       "Results-Grid view.csv, rows whose Paper is soft-filter-pruning "
                                       "(a hand transcription of the SFP paper with at least one known slip)"),
    Source("SFP-abs", "abstract", _SFP, "abstract"),
    Source("SNF-abs", "abstract", _SNF, "abstract (the paper body and code were not available)"),
)}
