"""CDRL rollouts through TRL's vLLM generation (catts.train.trl_vllm).

vLLM does not run on this project's CPU machines (no CUDA; the CPU build in shared/tools is a separate server, not
the in-process engine TRL's colocate mode needs, nor TRL's weight-syncing server). So vLLM itself is replaced here by
``StandInGeneration``, a stand-in for ``trainer.vllm_generation`` that keeps TRL's documented contract
(``generate(prompt_ids, images, num_generations) -> (prompt_ids, completion_ids, logprobs, logprob_token_ids)``, ranked
log-probabilities with the sampled token always included, ``logprobs`` top-k set by the caller, ``sync_weights``)
and samples from the live tiny policy. What is tested is catts's side: the conversion, the order of the entries, which
images reach the generator, the confidences, and a whole TRL step taking that path.
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
import torch

from catts.models.backend import Prompt

CONFIG = Path(__file__).resolve().parents[1] / "catts" / "train" / "configs" / "cdrl_tiny.yaml"


class StandInGeneration:
    """Follows TRL's ``VLLMGeneration.generate`` contract over a transformers model (see the module docstring)."""

    def __init__(self, model, processor, max_tokens: int, seed: int = 0):
        self.model, self.processor, self.max_tokens = model, processor, max_tokens
        self.logprobs = 0  # TRL's default: the sampled token only
        self.calls: list[dict] = []
        self.synced = 0
        self.generator = torch.Generator().manual_seed(seed)
        eos = processor.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def sync_weights(self):
        self.synced += 1

    @torch.no_grad()
    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls.append({"prompts": [list(p) for p in prompts], "images": images, "n": num_generations})
        k = max(self.logprobs, 0)
        completions, logprobs, token_ids = [], [], []
        for i, ids in enumerate(prompts):
            pixels = self.processor.image_processor(images[i], return_tensors="pt")["pixel_values"]
            seq, out_ids, out_lps, out_tok = list(ids), [], [], []
            for _ in range(self.max_tokens):
                logits = self.model(input_ids=torch.tensor([seq]), pixel_values=pixels).logits[0, -1]
                lp = torch.log_softmax(logits.float(), -1)
                tok = int(torch.multinomial(lp.exp(), 1, generator=self.generator))
                vals, idx = torch.topk(lp, k) if k else (lp[:0], torch.zeros(0, dtype=torch.long))
                ranked = list(zip(vals.tolist(), idx.tolist()))
                if tok not in idx.tolist():
                    ranked.append((float(lp[tok]), tok))  # vLLM adds the sampled token after the top k
                out_lps.append([v for v, _ in ranked])
                out_tok.append([t for _, t in ranked])
                out_ids.append(tok)
                seq.append(tok)
                if tok in self.eos:
                    break
            completions.append(out_ids)
            logprobs.append(out_lps)
            token_ids.append(out_tok)
        return [list(p) for p in prompts], completions, logprobs, token_ids


def test_trace_from_vllm_by_hand(tiny_backend):
    from catts.train.trl_vllm import trace_from_vllm

    eos = tiny_backend.eos_ids[0]
    # step 0: the sampled token 7 ranks below the top 2, so vLLM lists it third; step 1: a NaN (None) value
    trace = trace_from_vllm(tiny_backend, [7, eos], [[-0.1, -2.5, -4.0], [-0.05, None]], [[3, 5, 7], [eos, 9]], k=2)
    assert trace.token_ids == [7, eos] and trace.finish_reason == "stop"
    np.testing.assert_allclose(trace.logprobs, [-4.0, -0.05])
    np.testing.assert_allclose(trace.top_logprobs, [[-0.1, -2.5], [-0.05, -np.inf]])
    assert trace.top_ids.tolist() == [[3, 5], [eos, 9]]
    assert trace_from_vllm(tiny_backend, [7], [[-0.1, -0.2, -0.3]], [[7, 3, 5]], k=4).top_logprobs.tolist() == \
        [[pytest.approx(-0.1), pytest.approx(-0.2), pytest.approx(-0.3), -np.inf]]
    assert trace_from_vllm(tiny_backend, [7], [[-0.1]], [[7]], k=1).finish_reason == "length"
    with pytest.raises(ValueError, match="do not include the sampled token 7"):
        trace_from_vllm(tiny_backend, [7], [[-0.1]], [[3]], k=1)
    with pytest.raises(ValueError, match="for 1 steps of a 2-token completion"):
        trace_from_vllm(tiny_backend, [7, 8], [[-0.1]], [[7]], k=1)


def test_vllm_sampling_must_leave_the_distribution_raw():
    from catts.train.cdrl import build_trainer, parse_cdrl_args

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", str(CONFIG), "--use_vllm", "true", "--temperature", "1.2",
                                          "--top_p", "0.9", "--output_dir", "/tmp/unused-cdrl"])
    with pytest.raises(ValueError, match="temperature 1.2, top_p 0.9"):
        build_trainer(cdrl_cfg, grpo_cfg, dataset=[])


def _trainer(extra: list[str], tmp_path):
    from catts.train.cdrl import build_dataset, build_trainer, parse_cdrl_args

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", str(CONFIG), "--data", "shapes:test", "--limit", "2",
                                          "--temperature", "1.0", "--output_dir", str(tmp_path / "run"), *extra])
    ds = build_dataset(cdrl_cfg)
    trainer = build_trainer(cdrl_cfg, grpo_cfg, dataset=ds)
    stand_in = StandInGeneration(trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class,
                                 grpo_cfg.max_completion_length)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, stand_in, -1
    return trainer, ds, stand_in, grpo_cfg


@pytest.mark.parametrize("c_prime", ["paired", "teacher_forced"])
def test_rollout_generates_with_trl_vllm(tmp_path, c_prime, one_thread):
    from trl.data_utils import prepare_multimodal_messages

    from catts.train.pairs import image_fingerprint
    from catts.train.rewards import completion_confidence

    trainer, ds, stand_in, cfg = _trainer(["--c_prime", c_prime], tmp_path)
    rows = [ds[0]] * cfg.num_generations + [ds[1]] * cfg.num_generations  # TRL's order: a prompt's G entries together
    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows]
    out = trainer.cdrl_rollout(prompts, trainer)
    backend = trainer.cdrl_rollout.backend(trainer)
    # one collective call per kind of image, every entry in TRL's order, G per prompt, top-20 asked for
    assert len(stand_in.calls) == (2 if c_prime == "paired" else 1) and stand_in.logprobs == 20
    clean_call = stand_in.calls[0]
    assert clean_call["n"] == cfg.num_generations and len(clean_call["prompts"]) == len(rows)
    assert [image_fingerprint(im[0]) for im in clean_call["images"]] == [image_fingerprint(r["image"]) for r in rows]
    assert out["prompt_ids"] == clean_call["prompts"]
    if c_prime == "paired":
        noisy_call = stand_in.calls[1]
        assert [image_fingerprint(im[0]) for im in noisy_call["images"]] == \
            [image_fingerprint(r["noisy_image"]) for r in rows]
    # C is the policy's own: the same completion teacher-forced in transformers gives the same top-k confidence
    for i, row in enumerate(rows):
        text = row["prompt"][0]["content"][1]["text"]
        scored = backend.score([Prompt(images=[row["image"]], text=text)], [out["completion_ids"][i]], add_end=False)[0]
        assert out["confidence"][i] == pytest.approx(completion_confidence(scored), abs=1e-4)
        assert out["logprobs"][i] == pytest.approx(scored.logprobs.tolist(), abs=1e-4)
        if c_prime == "teacher_forced":
            noisy = backend.score([Prompt(images=[row["noisy_image"]], text=text)], [out["completion_ids"][i]],
                                  add_end=False)[0]
            assert out["noisy_confidence"][i] == pytest.approx(completion_confidence(noisy), abs=1e-4)
    assert {h["generator"] for h in trainer.cdrl_rollout.history} == {"vllm"}


def test_a_trl_step_through_the_vllm_path(tmp_path, one_thread):
    """TRL's own ``_generate`` syncs the weights to the generator, then calls the rollout, which generates there."""
    trainer, _, stand_in, _ = _trainer(["--max_steps", "1", "--per_device_train_batch_size", "8",
                                        "--c_prime", "teacher_forced"], tmp_path)
    trainer.train()
    assert stand_in.synced == 1 and len(stand_in.calls) == 1
    assert len(trainer.cdrl_rollout.history) == 8
    logged = next(h for h in trainer.state.log_history if "reward" in h)
    assert np.isfinite(logged["cdrl/confidence"]) and np.isfinite(logged["cdrl/noisy_confidence"])
