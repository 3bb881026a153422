"""CAT (Ke, Liu and Huang, NeurIPS 2020) as a baseline: before each task, transfer tests decide
which earlier tasks are similar (``prm.cat.transfer_test``); the units those tasks claimed first
stay trainable, and a knowledge-transfer attention over their masked features adds a second
head, chosen per task by validation accuracy (``prm.cat``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prm import cat as C
from prm import masks as M
from prm import trainer as T
from prm.methods.base import Method, Plan
from prm.methods.hat import Masked
from prm.model import MaskedMLP


class TransferTests(Masked):
    """HAT's masks with CAT's transfer tests, multipliers and attention head."""

    resumable = False  # a checkpoint would lack the attention and the calls
    detects = "transfer"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kta: C.TransferAttention | None = None  # built in start(), from the run's torch stream
        self.similar_sets: list[list[int]] = []  # per task, the earlier tasks its transfer test called similar

    def start(self, resume: Any) -> None:
        if resume is not None:
            raise ValueError("CAT runs cannot be resumed: their checkpoints would lack the attention and the calls")
        cfg = self.ctx.cfg
        with T.run_rng(self.ctx):
            self.kta = C.TransferAttention(width=cfg.model.hidden[-1], head_sizes=[t.n_classes for t in self.seq.tasks],
                                           heads=cfg.cat.heads, dropout=cfg.cat.attention_dropout).to(self.ctx.device)

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        """The transfer test (emitted), then CAT's gradient multipliers, the units they leave
        protected (recorded as ``protected_l<l>``), and the attention phase when some earlier
        task was called similar (else HAT's step with CAT's multipliers, which equal HAT's when
        every earlier task is dissimilar)."""
        if task == 0:  # nothing earlier to test: HAT's plan
            self.similar_sets.append([])
            return (yield from super().before(task, model, forced))
        ctx, acc = self.ctx, self.accumulated
        test = C.transfer_test(ctx, self.seq, model, task, self.data[task])
        ctx.emit(test)
        self.similar_sets.append(test.similar)
        free = [M.cat_free([m[l] for m in self.task_masks], test.dissimilar) for l in range(len(acc))]
        keeps = [(w.to(ctx.device), b.to(ctx.device)) for w, b in M.cat_keeps(acc, free)]
        custom = None
        if test.similar:
            custom = C.KTAPhase(model=model, kta=self.kta, task=task,
                                gates=C.gates(self.task_masks, test.similar, ctx.device), keeps=keeps,
                                reg=M.regulariser_weights(acc, model.widths), cfg=ctx.cfg,
                                rng=lambda: T.run_rng(ctx))
        return Plan(protect=[a * (1.0 - f) for a, f in zip(acc, free)], reg_used=acc, keeps=keeps, custom=custom,
                    epochs={"transfer": sum(test.epochs), "reference": test.reference_epochs},
                    seconds=dict(test.seconds))
        yield  # CAT's tests train on side stacks of their own (``trainer.apart``)

    def score_row(self, task: int, model: MaskedMLP, test_acc: Any, val_acc: Any) -> list[bool]:
        """Each task answers with the head CAT chose for it (its attention head or the main one)."""
        used = []
        for i in range(task + 1):
            if self.similar_sets[i]:
                use, val_acc[task, i], test_acc[task, i] = C.choose_head(
                    model, self.kta, i, C.gates(self.task_masks, self.similar_sets[i], self.ctx.device), self.data[i],
                    self.ctx.cfg.hat.smax)
                used.append(use)
                continue
            used.append(False)
            self.score(task, i, model, test_acc, val_acc)
        return used


METHOD = Method(
    name="cat", label="CAT", colour="#00A9E0", hooks=TransferTests, sections=("cat",), tuned=("lamb",),
    paper="CAT",
    help="CAT (Ke et al. 2020): per earlier task a transfer network and per new task a reference network "
         "decide which earlier tasks are similar; their first-claimed units stay trainable and a knowledge-"
         "transfer attention over their masked features adds a second head (docs/cat.md)",
)
