"""The pre-training jobs the launcher knows: the paper's recipe on v3 slices.

Every recipe is `configs/pretrain.py`'s base or large variant as it stands:
batch 256, 1M steps, 90% at seq 128 (20 predictions) then 10% at 512 (80).
What a recipe adds is the slice and the mesh and micro-batch count that fit
it, read off the README's plan table (`python bench/plan_table.py`, or
`python -m bert_jax.plan --recipe --topology=...` for one). The trainer
keeps one mesh and `grad_accum_steps` for the whole run, so they are the
ones phase 2 (seq 512, the larger) needs.
"""

import dataclasses

ACCELERATORS = ("v3-8", "v3-32", "v3-128", "v3-256")


@dataclasses.dataclass(frozen=True)
class Recipe:
  accelerator: str
  config: str  # --config=...
  ici_shape: str  # --config.mesh.ici_shape (data, fsdp, tensor); -1 = rest
  grad_accum_steps: int  # --config.optimizer.grad_accum_steps
  note: str

  def flags(self, config: str = "") -> list[str]:
    """The bert_jax.main flags of the recipe (data and workdir aside);
    `config` replaces the recipe's --config (a variant of the same size)."""
    return [f"--config={config or self.config}",
            f"--config.mesh.ici_shape={self.ici_shape}",
            f"--config.optimizer.grad_accum_steps={self.grad_accum_steps}"]


RECIPES = {
    # The paper's BERT-Base hardware: 16 chips. Plan: 6.8 GiB a core at 512.
    "base-v3-32": Recipe("v3-32", "configs/pretrain.py:base", "-1,1,1", 1,
                         "BERT-Base on 16 chips, as the paper trained it"),
    # The paper used 64 chips for Large; a v3-128 is 64 chips (128 cores).
    # Plan: 9.2 GiB a core at 512 with plain data parallelism.
    "large-v3-128": Recipe("v3-128", "configs/pretrain.py:large", "-1,1,1",
                           1, "BERT-Large on 64 chips, as the paper trained "
                           "it"),
    # One host. At 512 BERT-Base needs 2 micro-batches to fit (13 GiB a
    # core). BERT-Large at 512 fits a v3-8 only with rematerialisation
    # (--config.model.remat_policy=full: 9.8 GiB a core, plain data
    # parallelism); no recipe plans its whole run yet.
    "base-v3-8": Recipe("v3-8", "configs/pretrain.py:base", "-1,1,1", 2,
                        "BERT-Base on one v3-8 host (4 chips)"),
}
