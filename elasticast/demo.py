"""`elasticast demo`: the end-to-end path on a generated clip — synthesise speech, save a tiny ElasticAST with its
feature extractor, and classify the .wav through the stock `pipeline("audio-classification")`.

The model is randomly initialised: this shows the plumbing (decode → fbank → patches → packed encoder → pool → head),
not accuracy. Training lands with `elasticast train`.
"""

import tempfile
from pathlib import Path


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="classify a generated speech clip end to end (random tiny model)")
    parser.add_argument("--text", default="ElasticAST reads audio of any length without padding or trimming.")
    parser.add_argument("--output-dir", default=None, help="where to save the model (default: a temporary folder)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch
    from transformers import pipeline

    from . import ElasticASTConfig, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
    from .speech import synthesize

    torch.manual_seed(0)
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="elasticast-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    labels = ["speech", "music", "noise"]
    config = ElasticASTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
    )
    ElasticASTForAudioClassification(config).save_pretrained(work / "model")
    ElasticASTFeatureExtractor().save_pretrained(work / "model")
    wav = synthesize(args.text, work / "clip.wav")
    classifier = pipeline("audio-classification", model=str(work / "model"))
    print(f"clip: {wav}")
    print(f"model: {work / 'model'} (random weights: placeholder until `elasticast train`)")
    for result in classifier(str(wav), top_k=None):
        print(f"  {result['label']:>8s}  {result['score']:.4f}")
    return 0
