"""The engine's settings, as the bot's config loader hands them over: plain, frozen, already validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Hard caps on one request; guild caps may only be lower."""

    max_steps: int = 150
    max_pixels: int = 1024 * 1024
    max_side: int = 2048
    max_batch: int = 4
    max_prompt_chars: int = 4000
    # Start images (img2img): bytes of the file, and pixels of its header's size (checked before decoding).
    max_input_bytes: int = 20 * 1024 * 1024
    max_input_pixels: int = 4096 * 4096
    # ControlNet units one job may have (sd-webui-controlnet's default unit count); 0 turns ControlNet off.
    max_controlnet_units: int = 3


@dataclass(frozen=True)
class RayConfig:
    """The Ray Serve backend (`backend = "ray"`; docs/scaling.md): where the cluster is, how many
    engine replicas, what each one reserves, and the back-pressure and retry limits."""

    address: str = ""  # "": the Ray of this process, else a local one; "auto", "HOST:6379" or "ray://HOST:10001"
    app_name: str = "sdbot"  # the Serve application; `sdbot worker` and the bot must agree on it
    replicas: int = 1  # engine replicas: one per GPU
    num_gpus: float = 1.0  # GPUs each replica reserves (0: CPU replicas)
    num_cpus: float = 1.0  # CPUs each replica reserves; also its torch threads when `threads` is 0
    max_retries: int = 2  # re-runs of a job whose replica died, on another replica
    max_ongoing_requests: int = 4  # jobs one replica holds at once (Serve batches them); the bot keeps the rest
    start_timeout_s: float = 600.0  # how long `ready()` waits for the replicas to come up


@dataclass(frozen=True)
class EngineConfig:
    models_dir: Path = Path("models")
    default_model: str = ""
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | fp16 | bf16 | fp32
    vae_cache_size: int = 3
    checkpoint_cache_size: int = 1
    allow_pickle: bool = False
    limits: Limits = Limits()
    # The worker's settings: kept here so one object configures the whole engine.
    max_queued_per_user: int = 5
    round_robin: bool = True
    job_timeout_s: float = 600.0
    preview_every: int = 5  # K: a preview every K steps (shown where a server turns previews on); 0: none
    threads: int = 0  # torch intra-op threads; 0: torch's default
    # "exact": a batched image is pixel-identical to its solo run (the UNet and VAE see one image at a time;
    # BLAS results depend on the batch size). "fast": true tensor batching, for GPU throughput.
    batch_mode: str = "exact"
    # The gather window: an idle engine's next job waits up to this long (from its arrival) for compatible jobs
    # to share its call; never once the batch is full. 0: start at once (engine/backends/batching.py).
    batch_window_ms: int = 50
    # Who renders: "local", the in-process worker; "ray", engine replicas on a Ray cluster.
    backend: str = "local"
    # The local backend's engine: "process", a child process the bot restarts when it dies (the
    # default); "thread", a thread of the bot's own process (tests, tiny machines).
    isolation: str = "process"
    ray: RayConfig = RayConfig()
    # A local image-classification model folder; every rendered image is scored with it right after
    # decoding (engine/render/classifier.py). None: images are not scored.
    image_classifier: Path | None = None
    # ControlNet: ControlNets kept warm per checkpoint (LRU), and the folder holding the weighted
    # preprocessors' models (`depth_anything/` ...; engine/control/annotators.py); None: only the OpenCV ones.
    controlnet_cache_size: int = 3
    control_annotators: Path | None = None
