"""Batched generation (`--max-batch`): several requests of one shape denoised as one transformer batch.

Each job keeps everything that is its own: prompt (encoded per job, through the prompt cache), seed,
noise, images and soundtrack, progress callback and cancel. Only the transformer call is shared: every
step stacks the live jobs' latents (each widened to its guidance passes, job after job) into one batch,
and each job's rows of the output go through the same guidance, conditioning blend and scheduler step
as `stages.denoise` gives them alone. The VAE encodes and decodes run per job.

What may share a batch is decided twice. `request_key` reads the request alone (the queue's grouping);
`plan_key` reads the plan once the model has resolved it (its length may come from the soundtrack or the
duration head, its size from an image), and a job whose plan differs from the first one's runs alone after
the batch. Modes that change the denoising per job in ways one batch cannot hold (retake, extend, video
to video, temporal_upscale) and a `--parallel` rank group are never batched.

A job whose `on_step` raises (a cancel, its time limit) leaves the batch at that step: its row is dropped
and the others go on with exactly the inputs they had.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models import parallel
from ..models.loaded import LoadedModel
from ..models.lora import DISTILLED_LORA_STRENGTH, Adapter, side_paths
from ..schema import GenerateRequest
from . import progress, stages, temporal
from . import one_stage as one_stage_module
from . import two_stage as two_stage_module
from .conditioning import Conditioning, blend_velocity, decode_conditioning
from .expansion import expand_plan
from .length import choose_length
from .loras import resolve as resolve_loras
from .one_stage import Latents
from .passes import Perturbation, gate_timesteps, reference_semantics
from .progress import StageCallback
from .result import GenerationResult, result_of
from .schedules import MAX_TOKENS, STAGE_2_SIGMAS, sigmas_for, unsized_sigmas
from .stages import LatentGrid, Plan, Run, StepCallback, Stream, TextContext

# The request fields that shape the denoising: equal in every job of a batch (with the inputs' layout and
# the LoRAs, added by `request_key`).
SHAPE_FIELDS = ("width", "height", "num_frames", "duration", "fps", "video_size", "num_inference_steps",
                "guidance_scale", "audio_guidance_scale", "stg_scale", "audio_stg_scale", "modality_scale",
                "audio_modality_scale", "guidance_rescale", "audio_guidance_rescale", "stg_blocks", "use_multiscale",
                "match_audio_length", "interpolation_direction", "camera_lora", "camera_lora_scale")


def request_key(request: GenerateRequest) -> tuple | None:
    """What two requests must share to be batched, read off the request alone; None: never batched.

    Retake, extend and video to video denoise with per-job masks, windows or attention biases, and
    temporal_upscale runs a third round: they run alone."""
    if (request.retake is not None or request.extend is not None or request.ic_lora is not None
            or request.video is not None or request.temporal_upscale):
        return None
    layout = (request.image_start is not None, request.image_end is not None,
              tuple(k.frame for k in request.keyframes or ()), request.audio is not None,
              request.audio is not None and request.audio_strength == 1.0)
    loras = tuple((lora.model_dump_json()) for lora in request.loras or ())
    return tuple(getattr(request, name) if name != "stg_blocks" or request.stg_blocks is None
                 else tuple(request.stg_blocks) for name in SHAPE_FIELDS) + (layout, loras)


def plan_key(model: LoadedModel, plan: Plan) -> tuple | None:
    """What two plans must share to run as one batch: everything the denoising loop reads that is not a
    per-job tensor (noise, prompt, conditioned latents and their strengths)."""
    request = plan.request
    if plan.reference is not None or request.temporal_upscale or request_key(request) is None:
        return None
    frozen = plan.audio is not None and request.audio_strength == 1.0
    return (plan.use_multiscale, plan.width, plan.height, request.num_frames, request.fps, plan.steps, plan.guidance,
            tuple(image.frame for image in plan.images), plan.audio is not None, frozen)


@dataclass
class BatchJob:
    """One job of a batch: its request and its own callbacks (`on_progress` hears its decodes)."""

    request: GenerateRequest | Mapping[str, Any]
    on_step: StepCallback | None = None
    conditioning: Conditioning | None = None
    adapters: list[tuple[Adapter, float]] | None = None
    on_progress: StageCallback | None = None


@dataclass
class _Member:
    """A job while its batch runs."""

    index: int
    job: BatchJob
    plan: Plan
    run: Run
    expanded: str | None
    expand_seconds: float
    length_seconds: float
    latents: Latents | None = None
    first: Latents | None = None  # two-stage: stage 1's latents (a dev model decodes its soundtrack)
    loras: list[dict] = field(default_factory=list)  # LoRAs a stage added (dev stage 2's distilled LoRA)
    result: GenerationResult | None = None
    error: Exception | None = None
    schedulers: tuple = field(default=())
    noise: torch.Generator | None = None


@torch.inference_mode()
def generate_batch(model: LoadedModel, jobs: Sequence[BatchJob]) -> list[GenerationResult | Exception]:
    """Generate every job's video; the compatible ones (the first job's `plan_key`) as one batch.

    Returns one entry per job, in order: its result, or the exception that ended it (its own cancel,
    a refused input). A fault of the shared transformer call ends every job in the batch with it."""
    from .generate import generate  # generate imports the pipelines this module reuses

    out: list[GenerationResult | Exception | None] = [None] * len(jobs)
    requests: list[GenerateRequest | None] = [None] * len(jobs)
    for i, job in enumerate(jobs):
        try:
            request = job.request if isinstance(job.request, GenerateRequest) else \
                GenerateRequest.model_validate(job.request)
            requests[i] = request
            if job.conditioning is None:
                job.conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate,
                                                       model.vocoder_rate)
            if job.adapters is None:
                job.adapters = resolve_loras(model, request)
        except Exception as exc:  # noqa: BLE001 - this job's input; the others go on
            out[i] = exc
    ready = [i for i in range(len(jobs)) if out[i] is None]
    alone: list[int] = []
    if ready:
        lead = requests[ready[0]]
        key = request_key(lead) if parallel.current() is None else None
        batched = [i for i in ready if key is not None and request_key(requests[i]) == key]
        alone = [i for i in ready if i not in batched]
        if batched:
            alone += _run_group(model, jobs, requests, batched, out)
    for i in sorted(alone):  # the jobs that cannot join: one at a time, as without batching
        job = jobs[i]
        try:
            with progress.reporting(job.on_progress):
                out[i] = generate(model, requests[i], job.on_step, job.conditioning, job.adapters)
        except Exception as exc:  # noqa: BLE001
            out[i] = exc
    return out  # type: ignore[return-value]


def _run_group(model: LoadedModel, jobs, requests, indices: list[int], out: list) -> list[int]:
    """Plan the jobs that share a request key and run those whose plans agree; returns the rest."""
    members: list[_Member] = []
    rest: list[int] = []
    with model.lock, side_paths(model, jobs[indices[0]].adapters):  # the one LoRA set (the key holds it)
        for i in indices:
            job, request = jobs[i], requests[i]
            try:
                plan = stages.plan_generation(model, request, job.conditioning)
                plan, expanded, seconds = expand_plan(model, plan)
                started = time.perf_counter()
                plan = choose_length(model, plan)
                length_seconds = time.perf_counter() - started
                temporal.check(model, plan)
            except Exception as exc:  # noqa: BLE001
                out[i] = exc
                continue
            if members and plan_key(model, plan) != plan_key(model, members[0].plan):
                rest.append(i)
                continue
            total = plan.steps + (len(STAGE_2_SIGMAS) if plan.use_multiscale else 0)
            members.append(_Member(i, job, plan, Run(model, job.on_step, total_steps=total), expanded, seconds,
                                   length_seconds))
        if members and plan_key(model, members[0].plan) is None:  # the first plan cannot batch: all alone
            rest += [m.index for m in members]
            members = []
        if members:
            (_two_stage if members[0].plan.use_multiscale else _one_stage)(model, members)
    for m in members:
        if m.error is not None:
            out[m.index] = m.error
            continue
        result = m.result
        chosen = {"choose_length": m.length_seconds} if m.plan.length_from == "duration_head" else {}
        result.timings = {"expand_prompt": m.expand_seconds, **chosen, **result.timings}
        result.expanded_prompt = m.expanded
        result.loras = [adapter.report(scale) for adapter, scale in m.job.adapters] + result.loras
        out[m.index] = result
    return rest


def _live(members: list[_Member]) -> list[_Member]:
    return [m for m in members if m.error is None]


def _each(members: list[_Member], work) -> None:
    """`work(member)` for every live member; an exception ends that member only."""
    for m in _live(members):
        try:
            work(m)
        except Exception as exc:  # noqa: BLE001 - this job's own failure (its cancel, its input)
            m.error = exc


def _start(model: LoadedModel, members: list[_Member], grid: LatentGrid, width: int, height: int,
           sigmas: list[float]) -> None:
    """one_stage.make_latents' steps 1-3 for each job: its prompt, its conditions, its seeded noise."""
    def start(m: _Member) -> None:
        run, plan = m.run, m.plan
        with run.stage("encode_prompt"):
            prompt = plan.prompt or stages.prompt_embeddings(run, plan.request.prompt, plan.request.negative_prompt,
                                                             plan.guided)
        with run.stage("encode_conditioning"):
            conditions = stages.encode_conditions(model, plan, grid, width, height)
        with run.stage("prepare_latents"):
            generator = torch.Generator("cpu").manual_seed(plan.seed)
            video, audio = stages.prepare_latents(model, plan, grid, conditions, sigmas[0], generator)
        m.latents = Latents(prompt, conditions, generator, video, audio)
    _each(members, start)


def _decode(model: LoadedModel, members: list[_Member], grid: LatentGrid, pipeline: str,
            size: tuple[int, int]) -> None:
    def decode(m: _Member) -> None:
        with progress.reporting(m.job.on_progress):
            decoded = one_stage_module.decode(m.run, m.plan, m.latents, grid)
        m.result = result_of(m.run, m.plan, pipeline, size, *decoded,
                             has_audio_input=m.latents.conditions.audio is not None)
        m.result.loras = m.loras
    _each(members, decode)


def _one_stage(model: LoadedModel, members: list[_Member]) -> None:
    plan = members[0].plan
    width, height = stages.model_size(plan.width, plan.height, one_stage_module.size_multiple(model))
    grid = stages.latent_grid(model, plan, width, height)
    sigmas = sigmas_for(plan.steps, num_tokens=MAX_TOKENS, distilled=model.defaults.distilled)
    _start(model, members, grid, width, height, sigmas)
    ancestral = model.defaults.distilled and model.family.ancestral_first_stage
    denoise(model, members, sigmas, grid, plan.guidance, "denoise", ancestral)
    _decode(model, members, grid, one_stage_module.NAME, (width, height))


def _two_stage(model: LoadedModel, members: list[_Member]) -> None:
    """two_stage.two_stage's blocks, stage 1 and stage 2 each one batched denoise."""
    plan = members[0].plan
    dev = not model.defaults.distilled
    refine = list(STAGE_2_SIGMAS)
    width, height = stages.model_size(plan.width, plan.height, two_stage_module.size_multiple(model))
    low_width, low_height = two_stage_module.first_stage_size(model, width, height)
    low = stages.latent_grid(model, plan, low_width, low_height)
    full = stages.latent_grid(model, plan, width, height)
    sigmas = unsized_sigmas(plan.steps) if dev else sigmas_for(plan.steps, num_tokens=MAX_TOKENS, distilled=True)
    _start(model, members, low, low_width, low_height, sigmas)
    ancestral = model.defaults.distilled and model.family.ancestral_first_stage
    denoise(model, members, sigmas, low, plan.guidance, "stage1_denoise", ancestral)

    def second(m: _Member) -> None:
        run, first = m.run, m.latents
        with run.stage("upsample"):
            upsampled = stages.upsample(model, first.video, low)
        with run.stage("encode_conditioning"):
            conditions = stages.encode_images(model, m.plan, width, height)
            conditions.audio = first.conditions.audio
        with run.stage("prepare_latents"):
            video, audio = stages.prepare_latents(model, m.plan, full, conditions, refine[0], first.generator,
                                                  video_start=upsampled, audio_start=first.audio.latents)
        m.first = first
        m.latents = Latents(first.prompt, conditions, first.generator, video, audio)
    _each(members, second)
    lora = [(model.distilled_lora, DISTILLED_LORA_STRENGTH)] if dev else []
    with side_paths(model, lora) if lora else nullcontext():
        denoise(model, members, refine, full, two_stage_module.UNGUIDED, "stage2_denoise", False)
    for m in _live(members):  # dev: stage 1's soundtrack is the one decoded (two_stage.py)
        if dev:
            m.latents.audio = m.first.audio
        m.loras = [adapter.report(scale, stage="stage2") for adapter, scale in lora]
    _decode(model, members, full, two_stage_module.NAME, (width, height))


def denoise(model: LoadedModel, members: list[_Member], sigmas: list[float], grid: LatentGrid, guidance,
            stage: str, ancestral: bool) -> None:
    """`stages.denoise` for every live member at once: one transformer call per step on all their
    passes; everything after it per member, on its own rows. A member whose step callback raises
    leaves at that step."""
    pipe, device = model.pipe, model.device
    passes = guidance.passes
    perturbations = [Perturbation(skip_video_self_attention=p == "ptb" and guidance.video.stg != 0,
                                  skip_audio_self_attention=p == "ptb" and guidance.audio.stg != 0,
                                  isolate_modalities=p == "mod") for p in passes]
    contexts = {}
    for m in _live(members):
        prompt = m.latents.prompt
        by_pass = {"cond": prompt.positive, "uncond": prompt.negative, "ptb": prompt.positive, "mod": prompt.positive}
        contexts[m.index] = TextContext.cat(*(by_pass[p] for p in passes)) if len(passes) > 1 else prompt.positive
        m.noise = None if not ancestral else \
            torch.Generator("cpu").manual_seed(m.plan.seed + stages.ANCESTRAL_NOISE_SEED_OFFSET)
    started = time.perf_counter()
    with model.placement.use("transformer"):
        for m in _live(members):
            video_scheduler = copy.deepcopy(pipe.scheduler)
            video_scheduler.set_timesteps(sigmas=sigmas, device=device)
            m.schedulers = (video_scheduler, copy.deepcopy(video_scheduler))
        steps = len(_live(members)[0].schedulers[0].timesteps) if _live(members) else 0
        for step in range(steps):
            live = _live(members)
            if not live:
                break
            t = live[0].schedulers[0].timesteps[step]
            sigma = float(live[0].schedulers[0].sigmas[step])
            outputs = _batched_pass(model, live, [contexts[m.index] for m in live], t, sigma, grid, perturbations,
                                    guidance.stg_blocks)
            for m, (video_out, audio_out) in zip(live, outputs):
                try:
                    _step(m, guidance, passes, video_out, audio_out, step, t, sigma)
                    m.run.step_done()  # its progress, its cancel: raising here drops only this job
                except Exception as exc:  # noqa: BLE001
                    m.error = exc
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    for m in members:  # the batch's time is each job's time in this stage
        m.run.watch.timings[stage] = m.run.watch.timings.get(stage, 0.0) + seconds


def _step(m: _Member, guidance, passes, video_out, audio_out, step: int, t, sigma: float) -> None:
    """`stages.denoise`'s step body on one job's rows."""
    video, audio = m.latents.video, m.latents.audio
    video_scheduler, audio_scheduler = m.schedulers
    video_velocity = stages._guided(guidance.video, passes, video_out, video, sigma)
    audio_velocity = stages._guided(guidance.audio, passes, audio_out, audio, sigma)
    if video.strength is not None:
        video_velocity = blend_velocity(video_velocity, video.latents, video.clean, video.strength, sigma)
    if audio.strength is not None:
        audio_velocity = blend_velocity(audio_velocity, audio.latents, audio.clean, audio.strength, sigma)
    if m.noise is None:
        video.latents = video_scheduler.step(video_velocity, t, video.latents, return_dict=False)[0]
        audio.latents = audio_scheduler.step(audio_velocity, t, audio.latents, return_dict=False)[0]
    else:
        sigma_next = float(video_scheduler.sigmas[step + 1])
        video.latents = stages.ancestral_step(video, video_velocity, sigma, sigma_next, m.noise)
        audio.latents = stages.ancestral_step(audio, audio_velocity, sigma, sigma_next, m.noise)


def _batched_pass(model: LoadedModel, members: list[_Member], contexts: list[TextContext], t: torch.Tensor,
                  sigma: float, grid: LatentGrid, perturbations: list[Perturbation], stg_blocks: tuple[int, ...]
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`stages.transformer_pass` on several jobs' streams: each job's latents widened to its passes, the
    jobs one after another in the batch; returns each job's (video, audio) velocities, float32."""
    pipe, dtype = model.pipe, model.dtype
    transformer = pipe.transformer
    passes = len(perturbations)
    rows = passes * len(members)
    videos = [m.latents.video for m in members]
    audios = [m.latents.audio for m in members]
    widen = (lambda x: torch.cat([x] * passes)) if passes > 1 else (lambda x: x)
    stack = lambda xs: torch.cat([widen(x) for x in xs])  # noqa: E731
    # Each job's prompt mask; an all-ones one is dropped as stages.denoise drops it (it masks nothing).
    masks = [c.mask for c in contexts]
    mask = None if all(bool(x.all()) for x in masks) else torch.cat(masks)
    timestep = t.expand(passes)

    def timesteps(stream: Stream) -> torch.Tensor:
        return stages._token_timesteps(timestep, stream)

    sigmas = torch.full((rows,), sigma, device=timestep.device)
    first = videos[0]
    marks = {}
    if getattr(transformer.config, "use_keyframes_abs_pos_embedding", False):
        marked = torch.zeros(1, first.latents.shape[1], 1, device=first.latents.device)
        marked[:, : first.own_tokens // grid.frames] = 1.0
        marks["video_keyframes_mask"] = torch.cat([marked] * rows)
    # The plan key makes frozen the same in every job.
    video_sigma = torch.zeros_like(sigmas) if first.frozen else sigmas
    audio_sigma = torch.zeros_like(sigmas) if audios[0].frozen else sigmas
    with reference_semantics(transformer, video_gate=gate_timesteps(transformer, audio_sigma),
                             audio_gate=gate_timesteps(transformer, video_sigma),
                             perturbations=perturbations * len(members), stg_blocks=stg_blocks):
        video_velocity, audio_velocity = transformer(
            hidden_states=stack([v.latents for v in videos]).to(dtype),
            audio_hidden_states=stack([a.latents for a in audios]).to(dtype),
            encoder_hidden_states=torch.cat([c.video for c in contexts]),
            audio_encoder_hidden_states=torch.cat([c.audio for c in contexts]),
            timestep=torch.cat([timesteps(v) for v in videos]),
            audio_timestep=torch.cat([timesteps(a) for a in audios]),
            encoder_attention_mask=mask,
            audio_encoder_attention_mask=mask,
            num_frames=grid.frames,
            height=grid.height,
            width=grid.width,
            fps=grid.fps,
            audio_num_frames=grid.audio_frames,
            video_coords=stack([v.coords for v in videos]),
            audio_coords=stack([a.coords for a in audios]),
            sigma=video_sigma * transformer.config.timestep_scale_multiplier,
            audio_sigma=audio_sigma * transformer.config.timestep_scale_multiplier,
            use_cross_timestep=False,
            return_dict=False,
            **marks,
        )
    for m in members:
        m.run.transformer_passes += passes
    video_velocity, audio_velocity = video_velocity.float(), audio_velocity.float()
    return [(video_velocity[j * passes:(j + 1) * passes], audio_velocity[j * passes:(j + 1) * passes])
            for j in range(len(members))]
