import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, ClassLabel, Dataset, Features
from transformers import Trainer, TrainingArguments

from elasticast import ElasticASTDataCollator, ElasticASTFeatureExtractor, ElasticASTForAudioClassification
from elasticast.training.batching import PackedCollator
from elasticast.training.data import Clip, ClipTransform
from elasticast.training.loop import loss_sum


DURATIONS = [0.6, 2.4, 0.3, 1.7, 3.2, 0.9]


@pytest.fixture
def audio_dataset(tmp_path, clips):
    """Six WAV files of different lengths (real speech), as an audiofolder-like 🤗 dataset with an Audio column."""
    paths, labels = [], []
    for i, seconds in enumerate(DURATIONS):
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, clips[60.0][: int(seconds * 16000)] * (0.5 + 0.1 * i), 16000, subtype="FLOAT")
        paths.append(str(path))
        labels.append(i % 3)
    features = Features({"audio": Audio(sampling_rate=16000), "label": ClassLabel(names=["tone", "noise", "chirp"])})
    return Dataset.from_dict({"audio": paths, "label": labels}, features=features)


def assert_rows_hold_padding_only_at_their_tails(batch):
    real = batch["segment_ids"] > 0
    counts = real.sum(1)
    assert int(counts.max()) == real.shape[1]  # no all-padding columns
    positions = torch.arange(real.shape[1])
    assert torch.equal(real, positions[None, :] < counts[:, None])  # real tokens first, padding only after them


def test_collator_packs_raw_audio_dicts_and_extractor_outputs_the_same_way(clips):
    fe = ElasticASTFeatureExtractor()
    collator = ElasticASTDataCollator(fe, max_tokens_per_row=512)
    waves = [clips[s] for s in (0.4, 3.0, 7.5, 1.0)]
    from_arrays = collator([{"audio": {"array": w, "sampling_rate": 16000}, "label": i} for i, w in enumerate(waves)])
    assert torch.equal(from_arrays["labels"], torch.tensor([0, 1, 2, 3]))
    assert_rows_hold_padding_only_at_their_tails(from_arrays)
    assert int(from_arrays["clip_ids"].max()) == 4 and from_arrays["segment_ids"].shape[1] <= 512
    direct = fe(waves, sampling_rate=16000, packing=True, max_tokens_per_row=512, return_tensors="pt")
    for key in direct:
        torch.testing.assert_close(from_arrays[key], direct[key])
    # one-clip extractor outputs (as `dataset.map(fe)` gives one example at a time) pack to the same rows
    one_each = [dict(fe(w, sampling_rate=16000, max_tokens_per_row=512, packing=True).data, label=i)
                for i, w in enumerate(waves)]
    for example in one_each:
        del example["clip_ids"]
    repacked = collator(one_each)
    for key in direct:
        torch.testing.assert_close(repacked[key], direct[key])
    # another rate is resampled (soxr); bare arrays carry no labels
    at_8k = collator([{"array": w[::2], "sampling_rate": 8000} for w in waves])
    assert "labels" not in at_8k and int(at_8k["clip_ids"].max()) == 4


def test_collator_says_what_to_do_when_trainer_dropped_the_audio_column():
    collator = ElasticASTDataCollator(ElasticASTFeatureExtractor())
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        collator([{"label": 0}, {"label": 1}])


def test_trainer_trains_two_steps_on_packed_rows_with_our_loops_loss(tiny_config, audio_dataset, tmp_path):
    fe = ElasticASTFeatureExtractor()
    model = ElasticASTForAudioClassification(tiny_config(num_labels=3))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    collator = ElasticASTDataCollator(fe, max_tokens_per_row=2048)
    batches = []

    def recording_collator(examples):
        batches.append(collator(examples))
        return batches[-1]

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=len(DURATIONS), max_steps=2,
        learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=audio_dataset, data_collator=recording_collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(batches) == 2 and len(losses) == 2
    assert not torch.equal(model.state_dict()["classifier.dense.weight"], initial["classifier.dense.weight"])
    for batch in batches:
        assert_rows_hold_padding_only_at_their_tails(batch)
        assert int(batch["clip_ids"].max()) == len(DURATIONS)
        tokens = int((batch["segment_ids"] > 0).sum())
        assert batch["segment_ids"].numel() - tokens < 2048  # only the last row's tail can hold much padding

    # Our training loop's collator and loss on the same clips (in the order Trainer drew them), initial weights.
    first = batches[0]
    order = [int(audio_dataset[i]["label"]) for i in range(len(DURATIONS))]
    assert sorted(first["labels"].tolist()) == sorted(order)
    reference = ElasticASTForAudioClassification(tiny_config(num_labels=3))
    reference.load_state_dict(initial)
    reference.train()
    waves = _waves_in_batch_order(audio_dataset, first, fe)
    ours = PackedCollator(fe, ClipTransform(mode="native", fe=fe), 3, 2048)(
        [Clip(key=(0, i), label=int(label), wave=wave, full_frames=1, audio_frames=1)
         for i, (wave, label) in enumerate(zip(waves, first["labels"].tolist()))],
        np.random.default_rng(0), train=False,
    )
    for key in ours.inputs:
        torch.testing.assert_close(ours.inputs[key], first[key])
    logits = reference(**ours.inputs).logits
    our_loss = float(loss_sum(logits, ours.targets, multi_label=False).detach()) / len(ours)
    assert losses[0] == pytest.approx(our_loss, rel=1e-4)


def _waves_in_batch_order(dataset, batch, fe) -> list[torch.Tensor]:
    """The dataset's waveforms matched to the batch's clips by their token count and first patch."""
    waves = [torch.as_tensor(dataset[i]["audio"].get_all_samples().data[0]) for i in range(len(dataset))]
    single = [fe(w, sampling_rate=16000, packing=True, max_tokens_per_row=2048, return_tensors="pt") for w in waves]
    out = []
    for clip in range(1, int(batch["clip_ids"].max()) + 1):
        mine = batch["input_values"][batch["clip_ids"] == clip]
        match = [i for i, s in enumerate(single) if s["input_values"][s["clip_ids"] == 1].shape == mine.shape
                 and torch.allclose(s["input_values"][s["clip_ids"] == 1], mine)]
        assert len(match) == 1
        out.append(waves[match[0]])
    return out
