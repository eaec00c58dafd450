"""Decoding token sequences from an autoregressive model: sampling, greedy, beam search, CTC.

Every decoder here takes the model as one function of one step,
``step_fn(carry, token) -> (carry, logits: (V,))`` (for a :func:`rnnjax.language_model`,
``lambda c, t: lm.step(params, c, t)``), and runs inside ``jax.lax.scan`` for a fixed number
of steps, so that it jits, vmaps over a batch of prompts, and compiles once per shape.

* :func:`generate`: the one generation loop every model's ``generate`` runs: a prompt
  read verbatim, then tokens picked one by one until ``max_length`` or the end token:
  greedy (``key=None``), sampled with a temperature, top-k (Fan et al. 2018) or
  nucleus/top-p (Holtzman et al. 2020), or the best beam.
* :func:`beam_search`: the ``beam_size`` highest-scoring continuations, score the sum of
  the tokens' log-probabilities, optionally divided by Wu et al. 2016's length penalty.
* :func:`ctc_greedy` and :func:`ctc_prefix_beam_search`: reading a label sequence off
  per-frame CTC logits (Graves et al. 2006), best path and prefix beam search.
"""

from rnnjax._src.decoding import beam_search, ctc_greedy, ctc_prefix_beam_search, generate

__all__ = ["beam_search", "ctc_greedy", "ctc_prefix_beam_search", "generate"]
