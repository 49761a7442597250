"""KD losses, registered by name (plain functions of tensors)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..registry import Registry

KDLoss = Callable[..., torch.Tensor]
KD_LOSSES: Registry[KDLoss] = Registry("KD loss")


@KD_LOSSES.register("response")
def response_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                     *, alpha: float, temperature: float) -> torch.Tensor:
    """Hinton et al. soft-target loss, averaged over the batch:

    L_KD = alpha * CE(y, softmax(z_S)) + (1 - alpha) * tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau))
    """
    ce = F.cross_entropy(student_logits, labels)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return alpha * ce + (1 - alpha) * temperature**2 * kl
