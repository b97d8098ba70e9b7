#!/usr/bin/env bash
# Fresh-machine set-up, idempotent: Debian packages, a venv with the CPU torch wheel first, then the project.
set -euo pipefail
VENV=${1:-.venv}
need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
# The web demo's browser test drives Debian's chromium (Playwright's own browser download is not reachable).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v ffmpeg >/dev/null || { echo "ffmpeg is missing after apt-get install" >&2; exit 1; }
command -v espeak-ng >/dev/null || { echo "espeak-ng is missing after apt-get install" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium is missing after apt-get install" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch FIRST: the CPU wheel; any resolver run without it pulls a multi-GB CUDA build.
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,app,onnx,events]"
"$VENV/bin/python" -c "import torch, torchcodec, transformers, datasets, gradio, playwright, onnxruntime, onnxscript, elasticast; print('set-up ok: torch', torch.__version__, 'transformers', transformers.__version__)"
# transformers' common model tests from the installed version's PyPI sdist, into ~/.cache/elasticast (outside the
# repository); without PyPI, tests/test_transformers_common.py skips and says why.
PYTHONPATH=. "$VENV/bin/python" scripts/transformers_tests.py \
  || echo "transformers' common tests not fetched (PyPI unreachable?): tests/test_transformers_common.py will skip" >&2
