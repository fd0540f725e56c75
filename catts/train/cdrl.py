"""CDRL training (spec section 5): GRPO on original/noisy image pairs with the CDRL rewards.

``train_cdrl(cdrl_cfg, grpo_cfg)`` builds the pairs (``catts.train.pairs.build_pairs``), the reward set
(``catts.train.rewards.cdrl_rewards``, split so each term is logged), the rollout function
(``catts.train.rollout.make_rollout``: C and C' from the live policy's top-k distributions) and TRL's
``GRPOTrainer`` (``catts.train.pathwise.CDRLTrainer``: plain GRPO unless ``calibration_loss_weight`` adds the
calibration term's pathwise gradient), trains and saves the model and processor to ``grpo_cfg.output_dir``.

Configuration is parsed the way TRL parses its own scripts: ``parse_cdrl_args`` runs ``trl.TrlParser`` over
(``CDRLConfig``, ``trl.GRPOConfig``), so a YAML file (``--config``) sets fields of either, and command-line flags
override it; GRPOConfig's options are TRL's, not copied here. ``catts train cdrl`` is that parser behind the CLI.

Logged per step besides TRL's own metrics (``rewards/<name>/mean`` for format, output, perception and calibration,
``reward``, ...): ``cdrl/confidence`` (mean C), ``cdrl/noisy_confidence`` (mean C'), ``cdrl/confidence_gap``
(mean C - C'), ``cdrl/accuracy`` (mean R_output), and from the rewards ``cdrl/unparsed``, ``cdrl/tied_groups``;
with the pathwise loss also ``cdrl/calibration_loss`` and ``cdrl/live_confidence`` (the loss's own c), with the
clean anchor ``cdrl/clean_kl``.
Written to ``output_dir``: the model, processor, ``trainer_state.json`` (TRL's log history), ``cdrl_config.json``
and ``rollouts.jsonl`` (every rollout's pair id, completion, C and C'). With ``interpolation`` below 1 the model
there is the interpolation (``catts.train.interpolate``, recorded in ``interpolation.json``) and the trained
weights are in ``output_dir/trained``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from catts.train.interpolate import interpolate_weights
from catts.train.pathwise import RewardTap, make_trainer_class
from catts.train.progress import StepLog
from catts.train.rewards import CALIBRATIONS, CONFIDENCE_KINDS, FORMAT_RULES, NORMALIZATIONS, cdrl_rewards
from catts.train.rollout import C_PRIMES, make_rollout, rollout_stats
from catts.train.trl_vllm import check_vllm_sampling

log = logging.getLogger("catts")


@dataclass
class CDRLConfig:
    """CDRL's own options (GRPO's are ``trl.GRPOConfig``'s)."""

    model: str = field(default="tiny", metadata={"help": "embedded model name or local model folder"})
    data: list[str] = field(default_factory=lambda: ["shapes:train"],
                            metadata={"help": "data specs (catts.data.load_data), e.g. shapes:train"})
    noise: str = field(default="key_region", metadata={"help": "key_region or diffusion"})
    level: list[int] = field(default_factory=lambda: [500], metadata={"help": "diffusion step(s) of the noise"})
    original_level: list[str] = field(default_factory=lambda: ["0"], metadata={
        "help": "the originals: diffusion step(s) (0: clean, the spec's) or 'kind:level' (e.g. pure_noise:1); "
                "catts.train.pairs"})
    perception_alpha: float = field(default=0.5, metadata={"help": "alpha: weight of the perception term"})
    perception_beta: float = field(default=0.1, metadata={
        "help": "beta inside tanh of the perception term (GRPOConfig's beta is the KL weight)"})
    calibration: str = field(default="spec", metadata={"help": "spec or brier"})
    calibration_weight: float = field(default=1.0, metadata={
        "help": "weight of the calibration term in the reward (1: the spec's sum)"})
    format_weight: float = field(default=1.0, metadata={
        "help": "weight of the format term in the reward (1: the spec's sum)"})
    format_rule: str = field(default="box", metadata={
        "help": "box (the spec's: exactly one closed box) or answer (the box also holds an answer under the "
                "sample's rules, e.g. one of its options; catts.train.rewards.format_reward)"})
    normalize: str = field(default="group", metadata={
        "help": "group (the spec's Cnorm: min-max within the G rollouts) or none (a probability-valued C as it is)"})
    confidence_kind: str = field(default="mean", metadata={"help": "the confidence C (catts.train.rewards)"})
    c_prime: str = field(default="paired", metadata={
        "help": "paired (the spec: C' of G rollouts sampled on the noisy image) or teacher_forced (the option: "
                "the same completion scored on the noisy image; cheaper, lower variance)"})
    calibration_loss_weight: float = field(default=0.0, metadata={
        "help": "weight of the calibration term's pathwise gradient, a Brier loss on the policy's own confidence "
                "(a catts extension, catts.train.pathwise; 0: off, the spec's GRPO); needs temperature 1"})
    grpo_weight: float = field(default=1.0, metadata={
        "help": "weight of the GRPO loss (0 with calibration_loss_weight > 0: the supervised calibration baseline)"})
    calibration_loss_unparsed: str = field(default="skip", metadata={
        "help": "skip (an unparsed reply is left out of the pathwise Brier loss) or wrong (counted as a wrong answer)"})
    calibration_loss_clean: bool = field(default=True, metadata={
        "help": "false: leave completions of clean originals out of the pathwise Brier loss (catts.train.pathwise)"})
    anchor_kl_weight: float = field(default=0.0, metadata={
        "help": "weight of an extra KL to the reference on completions of clean originals (a catts extension, "
                "catts.train.pathwise; 0: off); needs GRPO's beta > 0"})
    interpolation: float = field(default=1.0, metadata={
        "help": "keep this fraction of what training changed: the saved weights are base + interpolation * "
                "(trained - base) (WiSE-FT, a catts extension, catts.train.interpolate; 1: the trained weights, "
                "the spec's); below 1 the trained weights are kept in output_dir/trained"})
    limit: int = field(default=0, metadata={"help": "use at most this many samples per data spec (0: all)"})
    max_pixels: int = field(default=0, metadata={"help": "shrink images above this many pixels (0: keep)"})
    pair_seed: int = field(default=0, metadata={"help": "seed of the noise"})
    dry_run: bool = field(default=False, metadata={"help": "print the parsed configuration and exit"})

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.level, int):
            self.level = [self.level]
        if isinstance(self.original_level, (int, str)):
            self.original_level = [self.original_level]
        self.original_level = [str(t) for t in self.original_level]
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.format_rule not in FORMAT_RULES:
            raise ValueError(f"format_rule must be one of {FORMAT_RULES}, got {self.format_rule!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.confidence_kind not in CONFIDENCE_KINDS:
            raise ValueError(f"confidence_kind must be one of {CONFIDENCE_KINDS}, got {self.confidence_kind!r}")
        if not 0.0 < self.interpolation <= 1.0:
            raise ValueError(f"interpolation must be in (0, 1], got {self.interpolation}")
        if self.c_prime not in C_PRIMES:
            raise ValueError(f"c_prime must be one of {C_PRIMES}, got {self.c_prime!r}")


def parse_cdrl_args(argv: list[str] | None = None):
    """(CDRLConfig, GRPOConfig) from ``argv`` (``--config FILE.yaml`` plus flags of either), parsed by TRL's
    ``TrlParser``; an unknown flag is an error (TRL's message)."""
    from trl import GRPOConfig, TrlParser

    parser = TrlParser((CDRLConfig, GRPOConfig))
    cdrl_cfg, grpo_cfg = parser.parse_args_and_config(args=argv)
    return cdrl_cfg, grpo_cfg


def build_dataset(cfg: CDRLConfig, errors: list[dict] | None = None):
    """The pair dataset of ``cfg``'s data specs."""
    from catts.data import load_data
    from catts.train.pairs import build_pairs

    samples = []
    for spec in cfg.data:
        loaded = load_data(spec)
        samples += loaded[:cfg.limit] if cfg.limit else loaded
    if not samples:
        raise ValueError(f"no samples in {cfg.data}")
    level = cfg.level[0] if len(cfg.level) == 1 else cfg.level
    return build_pairs(samples, noise=cfg.noise, level=level, seed=cfg.pair_seed, max_pixels=cfg.max_pixels or None,
                       errors=errors, original_levels=cfg.original_level)


def _logging(func: Callable) -> Callable:
    """``output_reward`` that also logs cdrl/accuracy, cdrl/confidence, cdrl/noisy_confidence and
    cdrl/confidence_gap through TRL's ``log_metric`` (keeps the name TRL logs it under)."""

    @functools.wraps(func)
    def wrapped(completions, confidence=None, noisy_confidence=None, log_metric=None, **kwargs):
        out = func(completions, **kwargs)
        if callable(log_metric) and out:
            log_metric("cdrl/accuracy", float(np.mean(out)))
            if confidence is not None:
                nc = noisy_confidence if noisy_confidence is not None else [math.nan] * len(confidence)
                for name, value in rollout_stats(confidence, nc).items():
                    if math.isfinite(value):
                        log_metric(f"cdrl/{name}", value)
        return out

    return wrapped


def build_trainer(cdrl_cfg: CDRLConfig, grpo_cfg, dataset=None):
    """The GRPOTrainer of a CDRL run (not yet trained); its rollout function is ``trainer.cdrl_rollout``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from catts.models import resolve_model_path

    check_vllm_sampling(grpo_cfg)
    if dataset is None:
        dataset = build_dataset(cdrl_cfg)
    path = resolve_model_path(cdrl_cfg.model)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    funcs, weights = cdrl_rewards(cdrl_cfg.perception_alpha, cdrl_cfg.perception_beta,
                                  calibration=cdrl_cfg.calibration, normalize=cdrl_cfg.normalize,
                                  num_generations=grpo_cfg.num_generations,
                                  calibration_weight=cdrl_cfg.calibration_weight,
                                  format_weight=cdrl_cfg.format_weight, format_rule=cdrl_cfg.format_rule)
    funcs = list(funcs)
    tap = RewardTap()
    funcs[0] = tap.wrap(funcs[0], "format")
    funcs[1] = tap.wrap(_logging(funcs[1]), "output")
    grpo_cfg.reward_weights = list(weights)
    grpo_cfg.remove_unused_columns = False
    rollout = make_rollout(dataset, processor, confidence_kind=cdrl_cfg.confidence_kind, c_prime=cdrl_cfg.c_prime,
                           seed=grpo_cfg.seed)
    trainer = make_trainer_class()(model=model, reward_funcs=funcs, args=grpo_cfg, train_dataset=dataset,
                                   processing_class=processor, rollout_func=rollout, tap=tap,
                                   confidence_kind=cdrl_cfg.confidence_kind,
                                   calibration_loss_weight=cdrl_cfg.calibration_loss_weight,
                                   grpo_weight=cdrl_cfg.grpo_weight,
                                   unparsed=cdrl_cfg.calibration_loss_unparsed,
                                   anchor_kl_weight=cdrl_cfg.anchor_kl_weight,
                                   calibrate_clean=cdrl_cfg.calibration_loss_clean)
    trainer.cdrl_rollout = rollout
    trainer.add_callback(StepLog())
    return trainer


def rollouts_path(output_dir: str | Path, process_index: int) -> Path:
    """Where a process writes its rollouts: ``rollouts.jsonl`` (main process), ``rollouts.<k>.jsonl`` (others)."""
    return Path(output_dir) / ("rollouts.jsonl" if process_index == 0 else f"rollouts.{process_index}.jsonl")


def resume_checkpoint(grpo_cfg) -> str | None:
    """The checkpoint a run resumes from: ``resume_from_checkpoint`` if set, else the last ``checkpoint-N`` in
    ``output_dir`` (a killed run goes on where its last checkpoint left it), else None."""
    from transformers.trainer_utils import get_last_checkpoint

    if grpo_cfg.resume_from_checkpoint:
        return str(grpo_cfg.resume_from_checkpoint)
    out = Path(grpo_cfg.output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def keep_rollouts_before(path: Path, step: int) -> None:
    """Drop the rollout records of steps ``>= step`` from ``path`` (those a resumed run will make again)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
    path.write_text("".join(line + "\n" for line in lines))


def train_cdrl(cdrl_cfg: CDRLConfig, grpo_cfg, *, trainer_hook: Callable | None = None) -> Path:
    """Train and save (see the module); returns ``grpo_cfg.output_dir``. ``trainer_hook(trainer)`` is called
    before training (tests use it to watch the trainer)."""
    trainer = build_trainer(cdrl_cfg, grpo_cfg)
    if trainer_hook is not None:
        trainer_hook(trainer)
    out = Path(grpo_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume = resume_checkpoint(grpo_cfg)
    log_path = rollouts_path(out, trainer.accelerator.process_index)
    if resume is None:
        log_path.unlink(missing_ok=True)
    else:
        step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"]
        keep_rollouts_before(log_path, step)
        log.info("resuming from %s (step %d)", resume, step)
    trainer.cdrl_rollout.log_path = log_path
    trainer.train(resume_from_checkpoint=resume)
    trained = out if cdrl_cfg.interpolation == 1.0 else out / "trained"
    trainer.save_model(str(trained))   # every process takes part (ZeRO-3 gathers); the main one writes
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(trained))
        if trained != out:
            interpolate_weights(cdrl_cfg.model, trained, cdrl_cfg.interpolation, out)
        trainer.state.save_to_json(str(out / "trainer_state.json"))
        (out / "cdrl_config.json").write_text(json.dumps(asdict(cdrl_cfg), indent=2))
    trainer.accelerator.wait_for_everyone()
    return out
