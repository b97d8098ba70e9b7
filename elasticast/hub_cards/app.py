"""Gradio Space for an ElasticAST model: record or upload audio of any length, see its labels, a timeline for long
recordings and the compression knob (elasticast.app builds the page).

`elasticast push` uploads this file next to the checkpoint with MODEL set to the repo. To run it as a Space: create
a Gradio Space, copy this app.py into it, and add a requirements.txt naming the elasticast package with its `[app]`
extra and a packages.txt with `ffmpeg` (audio decoding) and `espeak-ng` (the spoken example clip).
"""

from elasticast.app import CONCURRENT_REQUESTS, DEFAULT_MAX_FILE_SIZE, build_app

MODEL = "REPO_ID"

demo = build_app(MODEL)

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=CONCURRENT_REQUESTS).launch(max_file_size=DEFAULT_MAX_FILE_SIZE)
