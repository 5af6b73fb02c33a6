r"""NCL with its init step as a setting: RecBole's NCL, otherwise untouched.

Lin et al., "Improving Graph Collaborative Filtering with Neighborhood-enriched Contrastive
Learning", WWW 2022, https://arxiv.org/abs/2202.06200. The baseline stays RecBole's own
``NCL`` (what reviewers trust); this subclass exists for the notebook's ablations of it,
"ncl_wo_init_pam" and "ncl_wo_init_pam_and_loss_reg", and adds nothing else.

* ``param_init: xavier`` (default): RecBole's NCL exactly (its ``__init__`` runs
  ``self.apply(xavier_uniform_initialization)``: every embedding
  :math:`\mathcal U[-b, b]`, :math:`b = \sqrt{6 / (\text{fan}_\text{in} + \text{fan}_\text{out})}`).
* ``param_init: none``: RecBole's NCL without that line. Every embedding is what
  ``nn.Embedding`` drew at construction, :math:`E_{ij} \sim \mathcal N(0, 1)`, and the
  random stream is where that code leaves it (the draws are replayed from the state before
  ``NCL.__init__``; nothing else in it draws), so the run equals one of RecBole's NCL with
  the line deleted, bit for bit (``tests/models/test_ncl.py``).

Without the reg term ("ncl_wo_loss_reg") needs no switch: ``reg_weight: 0`` makes NCL's
first term ``mf_loss + 0 * reg_loss``, which is ``mf_loss`` exactly, value and gradient.

Trained by RecBole's ``NCLTrainer`` (E-step every ``m_step`` epochs, the prototype term
after ``warm_up_step``), as NCL is: :attr:`trainer_model`.

Loss terms: NCL's, ``(bpr + reg, ssl, proto)`` (``proto`` from the warm-up's end).

Args (config keys; defaults in ``config/NCLAblation.yaml``: RecBole's ``NCL.yaml``, and):
    param_init (str): ``"xavier"`` or ``"none"``.
"""

from __future__ import annotations

import torch
from recbole.model.general_recommender.ncl import NCL

__all__ = ["NCLAblation"]


class NCLAblation(NCL):
    """RecBole's NCL with ``param_init``; see the module docstring."""

    #: RecBole picks a trainer by the model's name (``get_trainer``: ``<name>Trainer``); this
    #: model trains with NCL's, which runs the E-step and the warm-up.
    trainer_model = "NCL"
    #: unnamed, as RecBole's NCL (whose trainer drops the last term during the warm-up), so
    #: that its stored terms line up with the NCL baseline's.
    loss_names: tuple[str, ...] = ()

    def __init__(self, config, dataset):
        before = torch.get_rng_state()
        super().__init__(config, dataset)
        self.param_init = config["param_init"] or "xavier"
        if self.param_init not in ("xavier", "none"):
            raise ValueError(f"param_init={self.param_init!r}: expected 'xavier' or 'none'")
        if self.param_init == "none":
            # Replay the construction's draws (the embeddings are NCL's first), so that both
            # the weights and the random stream are those of NCL without its init step.
            torch.set_rng_state(before)
            self.user_embedding.reset_parameters()
            self.item_embedding.reset_parameters()
