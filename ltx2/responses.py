"""The response models: what a finished video's JSON says (the server, the handler and /docs share them).

Apart from the request (ltx2.schema, which re-exports these) because the two change for different
reasons: a new request field is a new input rule, a new response field is a new report.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_serializer


class StageTimings(BaseModel):
    """Seconds per stage that ran; a stage the pipeline did not run is left out (not null, not 0)."""

    @model_serializer(mode="wrap")
    def _only_stages_that_ran(self, handler):
        return {name: value for name, value in handler(self).items() if value is not None}

    expand_prompt: float = Field(default=0.0, description="Seconds Gemma 3 spent expanding the prompt (0 when off).")
    choose_length: float | None = Field(default=None, description='With duration "auto": seconds spent encoding '
                                        "the prompt and running the duration head (the pipeline reuses the encoding).")
    encode_prompt: float = Field(description="Seconds spent in Gemma and the text connectors.")
    encode_conditioning: float = Field(
        default=0.0, description="Seconds spent encoding image_start/image_end (video VAE) and audio (audio VAE).")
    prepare_latents: float = Field(description="Seconds spent drawing the initial noise.")
    denoise: float | None = Field(default=None, description="One-stage: seconds spent in the denoising loop (all "
                                                            "transformer passes). Two-stage reports its stages below.")
    stage1_denoise: float | None = Field(default=None, description="Two-stage: seconds denoising at half size.")
    upsample: float | None = Field(default=None, description="Two-stage: seconds in the x2 spatial latent upsampler.")
    stage2_denoise: float | None = Field(default=None, description="Two-stage: seconds refining at full size.")
    temporal_upsample: float | None = Field(default=None, description="temporal_upscale: seconds in the x2 "
                                            "temporal latent upsampler.")
    temporal_denoise: float | None = Field(default=None, description="temporal_upscale: seconds refining the "
                                           "doubled frames.")
    decode_video: float = Field(description="Seconds spent in the video VAE decoder.")
    decode_audio: float = Field(description="Seconds spent in the audio VAE decoder and the vocoder.")
    mux: float = Field(default=0.0, description="Seconds spent encoding H.264/AAC and writing the MP4.")
    encode_base64: float = Field(default=0.0, description="Seconds spent base64-encoding the MP4.")
    transformer_passes: int = Field(default=0, description="Counter, not seconds: samples sent through the "
                                    "transformer (steps x 2 with guidance).")
    host_device_bytes: int = Field(default=0, description="Counter, not seconds: weight bytes the memory policy "
                                   "copied onto the GPU for this request (0 under resident).")
    prompt_cache_hits: int = Field(default=0, description="Counter, not seconds: 1 when the prompt's embeddings "
                                   "came from the prompt cache (Gemma did not run).")


class AppliedLora(BaseModel):
    path: str = Field(description="The LoRA as the request named it (a file name, URL, or a camera LoRA's file).")
    scale: float = Field(description="The scale it ran at.")
    layers: int = Field(description="How many layers of the model it adapts.")
    sha256: str = Field(description="The file's content hash.")
    key_style: str = Field(description="The key naming found in the file: ltx (Lightricks/ComfyUI), kohya or "
                                       "diffusers.")
    stage: str = Field(default="all", description='Which denoising it applied to: "all", or "stage2" for the '
                                                  "distilled LoRA of the dev two-stage pipeline.")


class GenerateResponse(BaseModel):
    """A finished video. The first nine fields are the original worker's response, unchanged."""

    video: str = Field(description="The MP4 (H.264 + AAC) as a data URI (data:video/mp4;base64,...), or its URL "
                                   'when response_format is "url".')
    duration_seconds: float = Field(description="num_frames / fps.", examples=[1.96])
    resolution: str = Field(description="WIDTHxHEIGHT of the video in the file: the requested size.",
                            examples=["288x512"])
    fps: int = Field(examples=[25])
    seed: int = Field(description="The seed used: yours, or the random one drawn for you.", examples=[1234567890])
    generation_time_seconds: float = Field(description="Wall time from request accepted to MP4 ready.")
    has_audio: bool = Field(description="Whether the MP4 has an audio stream.")
    has_image_start: bool = Field(description="Whether a start image conditioned the video.")
    has_image_end: bool = Field(description="Whether an end image conditioned the video.")
    keyframes: int = Field(default=0, description="How many images conditioned the video (keyframes, image_start "
                           "and image_end together; strength 0 does not count).", examples=[0])
    num_frames: int = Field(description="Frames in the video.", examples=[49])
    num_inference_steps: int = Field(description="Denoising steps actually run.", examples=[8])
    guidance_scale: float = Field(description="Guidance scale actually used.", examples=[1.0])
    audio_guidance_scale: float = Field(description="Audio guidance scale actually used.", examples=[1.0])
    stg_scale: float = Field(description="Video STG scale actually used.", examples=[0.0])
    audio_stg_scale: float = Field(description="Audio STG scale actually used.", examples=[0.0])
    modality_scale: float = Field(description="Video modality guidance scale actually used.", examples=[1.0])
    audio_modality_scale: float = Field(description="Audio modality guidance scale actually used.", examples=[1.0])
    guidance_rescale: float = Field(description="Video guidance rescale actually used.", examples=[0.0])
    audio_guidance_rescale: float = Field(description="Audio guidance rescale actually used.", examples=[0.0])
    stg_blocks: list[int] = Field(description="Blocks the STG pass perturbs (used only when an STG scale is "
                                              "not 0).", examples=[[29]])
    transformer_passes: int = Field(description="Samples run through the transformer, all steps together: steps "
                                                "x passes per step (1 without guidance); two-stage adds its 3 "
                                                "refining steps.", examples=[11])
    model: str = Field(description="The loaded model: a tiny preset's name or the checkpoint's.",
                       examples=["ltx-2-19b-distilled-fp8"])
    # Defaults: a result stored before families were reported came from an LTX-2 19B.
    model_family: str = Field(default="ltx-2", description='The model\'s generation: "ltx-2" (LTX-2 19B), '
                              '"ltx-2.3" or "ltx-2.5" (22B), read from the checkpoint\'s files.', examples=["ltx-2"])
    variant: str | None = Field(default=None, description='"distilled" (8 steps, no guidance) or "dev" (guided, '
                                "more steps); null in results stored by older versions.", examples=["distilled"])
    length_from: str = Field(default="request", description='Where num_frames came from: "request", "audio" '
                             '(match_audio_length) or "duration_head" (duration "auto", LTX-2.5).',
                             examples=["request"])
    predicted_seconds: float | None = Field(default=None, description="With the duration head: the length it "
                                            "predicted, in seconds, before the frame grid and the limits.")
    model_resolution: str = Field(
        description="WIDTHxHEIGHT the model ran at (its last stage): the requested size rounded up to a multiple of "
        "32 (of 64 for two-stage); the frames are its center crop.", examples=["320x512"])
    pipeline: str = Field(description='The pipeline that made the video: "one-stage" (every step at full size) or '
                                      '"two-stage" (half size, x2 latent upsampler, 3 refining steps at full size).',
                          examples=["two-stage"])
    use_multiscale: bool = Field(description="Whether the two-stage pipeline ran (the request's use_multiscale, or "
                                             "its default for the loaded model).", examples=[True])
    loras: list[AppliedLora] = Field(default_factory=list,
                                     description="The LoRAs applied (loras, then camera_lora), in request order; "
                                     'then, for the dev two-stage pipeline, the distilled LoRA (stage "stage2").')
    expanded_prompt: str | None = Field(default=None, description="The prompt Gemma 3 wrote when "
                                        "enable_prompt_expansion was on; it is what the video was made from.")
    audio_preprocessing: dict[str, float] | None = Field(
        default=None, description="With audio and preprocess_audio: the leading silence cut (s) and the gain "
        "applied to the model's copy (dB).", examples=[{"trimmed_seconds": 0.25, "gain_db": 4.5}])
    retake: dict[str, float] | None = Field(
        default=None, description="With retake: the span regenerated, {start, end} in seconds, and the frames "
        "regenerated [first_frame, end_frame); every other frame and the soundtrack outside [start, end) are the "
        "input's.", examples=[{"start": 0.5, "end": 1.5, "first_frame": 13, "end_frame": 38}])
    extend: dict[str, Any] | None = Field(
        default=None, description="With extend: the direction, the input's frames, the new frames and seconds, and "
        "the window plan: each window's start and end in the output's seconds, its num_frames, the overlap it held "
        "(frames and seconds) and the new frames it added, and its seed.",
        examples=[{"direction": "forward", "input_frames": 49, "new_frames": 125, "seconds": 5.0, "windows": [
            {"index": 0, "start": 1.6, "end": 6.56, "num_frames": 121, "overlap_frames": 9, "overlap_seconds": 0.36,
             "new_frames": 112, "seed": 42}]}])
    reference: dict[str, int | str | list[int] | None] | None = Field(
        default=None, description="With ic_lora: the reference video as stage 1 read it: its width, height and frames "
        "(after the IC-LoRA's temporal subsampling), the LoRA's downscale and temporal factors, control, and "
        "attention_mask: the latent grid [frames, height, width] conditioning_attention_mask was pooled onto (null "
        "without one).",
        examples=[{"width": 192, "height": 128, "frames": 121, "downscale": 2, "temporal": 1, "control": "canny",
                   "attention_mask": None}])
    timings: StageTimings = Field(description="Seconds per stage.")


__all__ = ["AppliedLora", "GenerateResponse", "StageTimings"]
