"""``python -m study.results STUDY``: rebuild a study's parquet tables from its files.

STUDY is the study's location: a local directory or a URI (``s3://bucket/studies/NAME``). The spec
it ran with (``spec.json``, read by :meth:`study.spec.StudySpec.load`) gives the study information
the tables carry; the tables themselves are built from the study's JSON alone by
:func:`analysis.results.write_tables` (never a pickle) and written whole.
"""

from __future__ import annotations

import sys

from analysis.cli import ArgumentParser, one_line
from analysis.results import StudyDir, StudyFileError, StudyLock, write_tables
from datasets.storage import StorageError
from study.spec import SpecError, StudySpec

__all__ = ["write_results", "main"]


def write_results(study: StudyDir, spec: StudySpec | None = None) -> tuple[str, str]:
    """Builds and writes ``trials.parquet`` and ``epochs.parquet`` of a study; returns their locations.

    Args:
        study: The study directory.
        spec: The spec it ran with; None reads it from the study (``spec.json``).

    Raises:
        FileNotFoundError: If the location holds no study.
        analysis.results.StudyFileError: If a file of the study is corrupt.
        study.spec.SpecError: If its ``spec.json`` is a spec today's model refuses.
    """
    spec = StudySpec.load(study) if spec is None else spec
    return write_tables(study, spec.info())


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m study.results", description="Rebuild a study's parquet tables.")
    parser.add_argument("study", help="the study directory: a local path or a URI (s3://bucket/studies/NAME)")
    args = parser.parse_args(argv)
    try:
        study = StudyDir(args.study)
        with StudyLock(study, "study.results"):  # the tables are written by one process at a time
            paths = write_results(study)
    except (FileNotFoundError, StudyFileError, SpecError, StorageError) as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
