# A reader of W&B offline run files (the .wandb record log), kept in the project so tests need nothing outside it.
"""Read a W&B .wandb transaction log (offline run) without the server or wandb-core.

This is wandb's PRIVATE format (wandb has no public reader of offline runs: its Python DataStore
was removed when wandb-core took over, and `wandb.Api` needs a server). So the tests that use
this reader run only for the wandb releases in KNOWN, where the format below was checked; for any
other release they skip and say so (check the format, then widen KNOWN). requirements/tested.txt
pins a release inside it, so CI always runs them.

Format (LevelDB-log style, as written by wandb-core):
  file header: b":W&B" + uint16 LE magic 0xBEE1 + uint8 version 0   (7 bytes)
  then 32 KiB blocks of chunks: uint32 LE crc32(type_byte+data), uint16 LE len, uint8 type
  type 1=FULL 2=FIRST 3=MIDDLE 4=LAST; payload = serialized wandb_internal_pb2.Record
wandb-core writes the file in its own service process, after `run.finish()` has returned
(measured with wandb 0.31.0: the exit record lands up to ~0.1 s later; with 0.18.0 the second run's
file was still empty), so `load_run` waits for
the run's exit record before it reads the run.
"""
import json, struct, time, zlib
from importlib.metadata import version

from packaging.specifiers import SpecifierSet

KNOWN = SpecifierSet(">=0.18,<0.32")  # checked: 0.18.0 (requirements/lowest.txt) and 0.31.0 (tested.txt)


def format_known() -> tuple[bool, str]:
    """(whether the installed wandb writes the format this reader knows, the reason to skip)."""
    v = version("wandb")
    return v in KNOWN, (f"tests/wandb_reader.py reads wandb's private offline-run format, checked for wandb "
                        f"{KNOWN}; installed {v}: check the format, then widen KNOWN")

BLOCK = 32768
HDR = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path, verify_crc=True):
    from wandb.proto import wandb_internal_pb2 as pb
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HDR:  # not even the header yet: wandb's service has not started writing
        return
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    pos, buf = 7, b""
    while pos + HDR <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HDR:          # block trailer padding
            pos += left_in_block
            continue
        crc, length, typ = struct.unpack("<IHB", data[pos:pos + HDR])
        if typ == 0 and length == 0:     # zero padding / preallocated tail
            break
        chunk = data[pos + HDR: pos + HDR + length]
        if len(chunk) < length:          # truncated (run still writing / crashed)
            break
        if verify_crc and zlib.crc32(chunk, zlib.crc32(bytes([typ]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad crc at offset {pos}")
        pos += HDR + length
        if typ == FULL:
            buf = chunk
        elif typ == FIRST:
            buf = chunk; continue
        elif typ == MIDDLE:
            buf += chunk; continue
        elif typ == LAST:
            buf += chunk
        rec = pb.Record()
        rec.ParseFromString(buf)
        buf = b""
        yield rec


def load_run(path, wait_s=60.0):
    """Return dict(config, history(list of dicts), summary, artifacts, exit_code), once the file
    holds the run's exit record (waiting up to ``wait_s`` for wandb's service to write it)."""
    end = time.time() + wait_s
    while True:
        records = list(iter_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > end:
            break
        time.sleep(0.1)
    out = {"config": {}, "history": [], "summary": {}, "artifacts": [], "run": {}, "exit_code": None}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "name": r.display_name,
                          "group": r.run_group, "job_type": r.job_type, "tags": list(r.tags)}
            for it in r.config.update:
                out["config"][it.key] = json.loads(it.value_json)
        elif kind == "config":
            for it in rec.config.update:
                out["config"][it.key] = json.loads(it.value_json)
        elif kind == "history":
            row = {}
            for it in rec.history.item:
                key = it.key or ".".join(it.nested_key)
                row[key] = json.loads(it.value_json)
            out["history"].append(row)
        elif kind == "summary":
            for it in rec.summary.update:
                key = it.key or ".".join(it.nested_key)
                out["summary"][key] = json.loads(it.value_json)
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "metadata": a.metadata,
                                     "files": [(e.path, e.local_path, e.size) for e in a.manifest.contents]})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


if __name__ == "__main__":
    import sys, glob, os, collections
    p = sys.argv[1]
    if os.path.isdir(p):
        p = glob.glob(os.path.join(p, "*.wandb"))[0]
    kinds = collections.Counter(r.WhichOneof("record_type") for r in iter_records(p))
    print(dict(kinds))
    d = load_run(p)
    print("run", d["run"]); print("config", d["config"]); print("n_history", len(d["history"]))
    print("history[0]", d["history"][0]); print("summary", {k: v for k, v in d["summary"].items() if not k.startswith("val_table")})
    print("artifacts", d["artifacts"]); print("exit_code", d["exit_code"])
