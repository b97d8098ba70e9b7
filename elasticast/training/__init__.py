"""Training for ElasticAST (and the paper's fixed-length AST baseline) on streamed 🤗 datasets with Accelerate.

`accelerate launch -m elasticast.training --dataset ... --output-dir runs/x` or `elasticast train ...`; see
`loop.py` for the design (data slots, global loss normalisation, exact resume).
"""

from .arguments import build_parser
from .command import add_parser


__all__ = ["add_parser", "build_parser"]
