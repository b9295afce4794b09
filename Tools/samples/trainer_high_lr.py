"""trainer-high-lr: a Hugging Face Trainer run whose learning rate is so high that the loss
sits at ln 2 = 0.693 on a balanced binary task (the model predicts p = 0.5 for every example).

Model: a tiny BertForSequenceClassification written with the real transformers library
(vocabulary 32, hidden size 16, 2 layers of 2 heads, intermediate size 32, 2 labels; about
12,000 parameters). Task: sequences of 12 tokens from ids 4..31; the label is whether token 5
appears more often than token 6, so a working model learns it quickly (ties are dropped and the
classes are balanced). Trained with `transformers.Trainer` on the CPU: AdamW at learning rate
0.05 (the default is 5e-5; 1e-3 learns this task), linear decay, batch 32, 300 steps, the loss
logged every 10 steps, a save every 60 steps (`checkpoint-60/` ... `checkpoint-300/`, each with
model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json,
training_args.bin and config.json).

    python Tools/samples/trainer_high_lr.py [--out DIR] [--lr 0.05]

Needs: torch, transformers, accelerate (and safetensors, which transformers installs).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

import common

RUN = "trainer-high-lr"
SEED = 0
VOCAB, LENGTH, ROWS = 32, 12, 4096


def dataset(seed: int, rows: int):
    """Balanced rows: label 1 when token 5 appears more often than token 6 (ties dropped)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows * 3, LENGTH), generator=g)
    fives, sixes = (ids == 5).sum(1), (ids == 6).sum(1)
    keep = fives != sixes
    ids, labels = ids[keep], (fives > sixes)[keep].long()
    positive, negative = ids[labels == 1][: rows // 2], ids[labels == 0][: rows // 2]
    ids = torch.cat([positive, negative])
    labels = torch.cat([torch.ones(len(positive), dtype=torch.long), torch.zeros(len(negative), dtype=torch.long)])
    order = torch.randperm(len(ids), generator=g)
    ids, labels = ids[order], labels[order]
    ids[:, 0] = 2  # a [CLS]-like first token

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": labels[i]}

    return Rows()


def train(out: str, lr: float, steps: int = 300, every: int = 60) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, set_seed

    set_seed(SEED)
    torch.set_num_threads(1)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=LENGTH, type_vocab_size=1, num_labels=2,
    )
    model = BertForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=32, learning_rate=lr,
        logging_steps=10, save_steps=every, save_strategy="steps", report_to="none", use_cpu=True,
        seed=SEED, data_seed=SEED, dataloader_num_workers=0, disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=dataset(SEED, ROWS)).train()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(common.SAMPLES, RUN), help="the Trainer's output directory")
    ap.add_argument("--lr", type=float, default=0.05, help="learning rate (0.05: the plateau; 1e-3 learns)")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args(argv)
    for old in glob.glob(os.path.join(args.out, "checkpoint-*")):
        shutil.rmtree(old)
    os.makedirs(args.out, exist_ok=True)
    # Trained from the output directory's parent, so that training_args.bin records a relative output_dir.
    os.chdir(os.path.dirname(os.path.abspath(args.out)))
    train(os.path.basename(os.path.abspath(args.out)), args.lr, args.steps)


if __name__ == "__main__":
    main()
