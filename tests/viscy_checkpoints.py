"""VisCy checkpoints saved as VisCy saves them: a Lightning module, Lightning's own writer."""

from __future__ import annotations

import logging
from pathlib import Path

VSCYTO2D_TINY = {"in_channels": 1, "out_channels": 2, "encoder_blocks": [1, 1, 1, 1],
                 "dims": [8, 16, 32, 64], "decoder_conv_blocks": 1,
                 "stem_kernel_size": [1, 2, 2], "in_stack_depth": 1, "pretraining": False}
"""The published VSCyto2D's layout (2-D stem, nuclei and membrane out), with tiny widths."""


def save_with_lightning(module, path: Path) -> Path:
    """Write `module` (a LightningModule) with `Trainer.save_checkpoint`, as training does."""
    import lightning.pytorch as lightning

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu",
                                devices=1, enable_progress_bar=False,
                                enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def vsunet_checkpoint(path: Path, model_config: dict | None = None, seed: int = 0):
    """A `VSUNet` checkpoint (no hyper-parameters, as the published VSCyto2D of June 2024);
    returns the module, in eval mode, beside the file."""
    import torch
    from viscy.translation.engine import VSUNet

    torch.manual_seed(seed)
    module = VSUNet(architecture="UNeXt2_2D", model_config=dict(model_config or VSCYTO2D_TINY))
    save_with_lightning(module, path)
    return module.eval()


def fcmae_checkpoint(path: Path, model_config: dict | None = None, seed: int = 0):
    """An `FcmaeUNet` checkpoint (saves its hyper-parameters, model_config among them)."""
    import torch
    from viscy.translation.engine import FcmaeUNet

    torch.manual_seed(seed)
    module = FcmaeUNet(model_config=dict(model_config or VSCYTO2D_TINY))
    save_with_lightning(module, path)
    return module.eval()
