"""Fetches transformers' common model tests for the installed version into a cache outside the repository.

    python scripts/transformers_tests.py          # prints the cache folder (downloads once)

The PyPI sdist of transformers (`pip download --no-deps --no-binary :all: transformers==<installed>`) ships the
top-level `tests/*.py` (test_modeling_common.py, test_configuration_common.py, test_feature_extraction_common.py,
test_sequence_feature_extraction_common.py, ...) but not the `tests/exporters/`, `tests/generation/` and
`tests/utils/` folders they import from. Those three imports are stubbed (`STUBS` below, each with its reason); no
test file is changed. The files land in `~/.cache/elasticast/transformers-tests/<version>/hf_common_tests/` (override
the root with `ELASTICAST_CACHE`), a package importable as `hf_common_tests` once the version folder is on sys.path.
tests/test_transformers_common.py calls `common_tests_path()` and skips, saying why, when PyPI cannot be reached.
"""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


PACKAGE = "hf_common_tests"

# Every stub, with why it is safe. Each replaces a module missing from the sdist; none is a test of the model.
STUBS = {
    # test_modeling_common.py: `class ModelTesterMixin(ExportTesterMixin)`. The real mixin (tests/exporters/) holds
    # the RUN_SLOW torch.export/ONNX tests; without it those tests are absent, not passed. ElasticAST's own export
    # tests (tests/test_transformers_common.py `test_packed_forward_*`, tests/test_onnx.py) cover export instead.
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # test_modeling_common.py uses GenerationTesterMixin only in `issubclass(self.__class__, GenerationTesterMixin)`
    # checks of models that can generate; ElasticAST cannot, and its testers do not inherit it.
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # test_configuration_common.py: `ConfigTester.check_config_arguments_init` builds a config from
    # `config_common_kwargs` and checks each key is kept. The sdist lacks the dict (tests/utils/); this one gives a
    # non-default value for each of PreTrainedConfig's own common arguments, so the check still tests the config.
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "tie_word_embeddings": False,\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "finetuning_task": "translation",\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}

WANTED = (
    "test_modeling_common.py",
    "test_configuration_common.py",
    "test_feature_extraction_common.py",
    "test_sequence_feature_extraction_common.py",
    "test_pipeline_mixin.py",
)


class FetchError(RuntimeError):
    """The sdist could not be downloaded (no network to PyPI, no such version)."""


def cache_root() -> Path:
    return Path(os.environ.get("ELASTICAST_CACHE", Path.home() / ".cache" / "elasticast")) / "transformers-tests"


def common_tests_path(version: str | None = None) -> Path:
    """The folder holding the `hf_common_tests` package for `version` (default: the installed transformers),
    downloading and extracting it on first use.

    Raises:
        FetchError: pip could not download the sdist (the message holds pip's last lines).
    """
    version = version or transformers.__version__
    target = cache_root() / version
    package = target / PACKAGE
    if (package / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "--timeout", "30", f"transformers=={version}", "-d", scratch],
            capture_output=True, text=True,
        )
        archives = list(Path(scratch).glob("transformers-*.tar.gz"))
        if done.returncode or not archives:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise FetchError(f"pip download of the transformers=={version} sdist failed (PyPI unreachable?): {tail}")
        package.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2] in WANTED and member.isfile():
                    (package / parts[2]).write_bytes(archive.extractfile(member).read())
    missing = [name for name in WANTED if not (package / name).exists()]
    if missing:
        raise FetchError(f"the transformers=={version} sdist has no tests/{missing}; the common tests moved?")
    (package / "__init__.py").touch()  # the sdist's tests/ is no package; the modules import each other relatively
    for relative, text in STUBS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    (package / ".complete").touch()
    return target


if __name__ == "__main__":
    print(common_tests_path())
