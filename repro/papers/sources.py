"""The documents every paper number in the tables comes from, named in full.

A ``PaperValue`` carries the key of its source; the generated tables show that key per cell and
print a legend built from ``SOURCES`` under every table (``Source.legend``). docs/papers.md
describes each document and what was read from it. Order of trust: the paper itself (its text
could not be read for this suite), the same first author's reprint of its rows (FPGM), then a
third party's hand transcription (ShrinkBench), then abstracts (which state a claim, not a table).
"""
from __future__ import annotations

from dataclasses import dataclass

# What a kind of document is, as the legend says it: only the paper's own text is primary.
KINDS = {
    "primary": "primary source",
    "reprint": "secondary source: a reprint of the paper's rows by the same first author",
    "transcription": "secondary source: a third party's hand transcription of the paper's tables",
    "abstract": "the paper's abstract: a claim in words, no table",
}


@dataclass(frozen=True)
class Source:
    key: str
    kind: str             # a key of KINDS
    citation: str         # authors, title, venue, year, arXiv id
    where: str            # the part of the document the numbers come from
    repository: str = ""  # for a file in a public repository: owner/name ...
    path: str = ""        # ... and the file's path in it

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"source {self.key}: kind must be one of {sorted(KINDS)}")
        if bool(self.repository) != bool(self.path):
            raise ValueError(f"source {self.key}: a repository file needs both its repository and its path")

    @property
    def primary(self) -> bool:
        return self.kind == "primary"

    def legend(self) -> str:
        """One line naming the document in full (and the repository file, if it is one)."""
        file = f"; repository {self.repository}, file {self.path}" if self.repository else ""
        return f"[{self.key}] {self.citation}; {self.where}{file} ({KINDS[self.kind]})"


_FPGM = ("Y. He, P. Liu, Z. Wang, Z. Hu, Y. Yang, \"Filter Pruning via Geometric Median for Deep "
         "Convolutional Neural Networks Acceleration\", CVPR 2019, arXiv:1811.00250")
_SFP = ("Y. He, G. Kang, X. Dong, Y. Fu, Y. Yang, \"Soft Filter Pruning for Accelerating Deep "
        "Convolutional Neural Networks\", IJCAI 2018, arXiv:1808.06866")
_SB = ("D. Blalock, J. J. Gonzalez Ortiz, J. Frankle, J. Guttag, \"What is the State of Neural Network "
       "Pruning?\", MLSys 2020, arXiv:2003.03033 (its ShrinkBench repository)")
_SNF = ("P. Liu, Y. Yue, Y. Guo, X. Tao, X. Zhou, \"Filter Pruning via Searching the Proper Number of "
        "Filters\" (SNF), 2021, arXiv:2112.07282")

SOURCES = {s.key: s for s in (
    Source("FPGM-T1", "reprint", _FPGM, "Table 1 (CIFAR-10), the rows of SFP"),
    Source("FPGM-T2", "reprint", _FPGM, "Table 2 (ImageNet), the rows of SFP; its column 'Fine-tune?' "
                                        "means initialised from a pre-trained model (the table's caption)"),
    Source("SB", "transcription", _SB, "the rows whose Paper is soft-filter-pruning (known to hold at least "
                                       "one slip: see the cells' caveats)",
           repository="JJGO/shrinkbench", path="analysis/assets/existing-results/Results-Grid view.csv"),
    Source("SFP-abs", "abstract", _SFP, "abstract"),
    Source("SNF-abs", "abstract", _SNF, "abstract (the paper's body and code were not available)"),
)}
