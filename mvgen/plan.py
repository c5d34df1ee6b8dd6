"""The Plan: deployments.yaml with every default resolved, in the shape templates need.

config.py builds it; render.py, deploy.py and the reports only read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from mvgen.catalog import Architecture, Checkpoint, GpuType
from mvgen.pooling import runner_args

VLLM_PORT = 8000  # vLLM listens here inside its container, never on a public port
GATEWAY_FUNCTION = "serve"  # name of the one web function per app: .../<app>-serve.modal.run
HF_CACHE = "/root/.cache/huggingface"
YamlPath = tuple[str | int, ...]  # ("models", "gemma-3-12b", "extra_args", 0)
VLLM_CACHE = "/root/.cache/vllm"
# Where a pool downloads Hub adapters at start, on the Hugging Face cache Volume, so each
# revision is fetched once and vLLM gets a fixed local path (it cannot pin a revision).
ADAPTER_DOWNLOADS = f"{HF_CACHE}/lora"
DEFAULT_MAX_LORAS = 4  # --max-loras when max_loras is unset: at most this many adapters


@dataclass(frozen=True)
class Settings:
    """Per model x GPU settings after defaults, model and per_gpu are merged."""

    max_model_len: int = 32768
    gpu_memory_utilization: float = 0.90
    quantization: str | None = None
    gpu_count: int = 1
    max_num_seqs: int | None = None  # None: vLLM's default for the GPU (fit.default_max_num_seqs)
    fast_boot: bool = True
    gpu_snapshot: bool = False
    limit_mm_per_prompt: dict[str, int] | None = None
    extra_args: tuple[str, ...] = ()
    max_inputs: int = 32
    min_containers: int = 0
    buffer_containers: int = 0
    max_containers: int | None = None
    scaledown_window: int = 900
    timeout: int = 1800
    startup_timeout: int = 1200
    max_loras: int | None = None  # None: the pair's adapters, at most DEFAULT_MAX_LORAS

    @property
    def ready_timeout(self) -> int:
        """Seconds the container waits for vLLM's /health: less than startup_timeout,
        so a slow start ends in our error (with its cause), not in Modal's limit. The
        margin covers recording the failure; startup_timeout is at least 30 s."""
        return self.startup_timeout - min(60, self.startup_timeout // 4)


@dataclass(frozen=True)
class Gpu:
    key: str  # short name: l40s
    type: GpuType

    def spec(self, count: int) -> str:
        """Modal's gpu string: `H100`, or `H100:2` for tensor parallelism."""
        return self.type.name if count == 1 else f"{self.type.name}:{count}"


@dataclass(frozen=True)
class AdapterFacts:
    """What vLLM reads from a LoRA adapter's adapter_config.json (mvgen/adapters.py)."""

    rank: int | None  # r
    target_modules: tuple[str, ...]
    base_model: str | None  # base_model_name_or_path, which vLLM never checks
    refused: tuple[str, ...] = ()  # why vLLM 0.12 would refuse to load it


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter on top of a model: requests name it like a model, and vLLM applies it
    in the base model's containers."""

    name: str  # what requests say in "model", and vLLM's LoRA name
    model: str  # the base model's short name
    hf_id: str | None  # a Hub repo, or None for a folder on the Hugging Face cache Volume
    revision: str | None
    path: str | None  # that folder, relative to the Volume's root
    gpus: tuple[str, ...]  # GPUs that load it
    declared_rank: int | None = None  # rank: in deployments.yaml
    facts: AdapterFacts | None = None  # from the lock's adapter_config.json
    unknown_reason: str | None = None  # why facts is None for a Hub adapter

    @property
    def rank(self) -> int | None:
        if self.facts is not None and self.facts.rank is not None:
            return self.facts.rank
        return self.declared_rank

    @property
    def local_dir(self) -> str:
        """Where vLLM reads the adapter inside the container."""
        if self.hf_id is None:
            return f"{HF_CACHE}/{self.path}"
        revision = (self.revision or "main").replace("/", "--")
        return f"{ADAPTER_DOWNLOADS}/{self.hf_id.replace('/', '--')}/{revision}"

    @property
    def source(self) -> str:
        """Where it comes from, as /v1/models shows it (`root`)."""
        if self.hf_id is None:
            return self.local_dir
        return f"{self.hf_id}@{self.revision}" if self.revision else self.hf_id

    def download(self) -> dict[str, str | None] | None:
        """What the container fetches from the Hub before vLLM starts (None: on the Volume)."""
        if self.hf_id is None:
            return None
        return {"repo_id": self.hf_id, "revision": self.revision, "local_dir": self.local_dir}


@dataclass(frozen=True)
class Model:
    key: str  # short name: gemma-3-12b
    hf_id: str
    served_name: str
    aliases: tuple[str, ...]  # every other accepted name, short name and hf_id included
    revision: str | None
    tool_parser: str | None
    architecture: Architecture | None  # declared, or from the lock's config.json of hf_id
    reasoning_parser: str | None = None
    litellm_order: tuple[str, ...] = ()  # GPUs the LiteLLM group tries first, in order
    unknown_reason: str | None = None  # why architecture is None (names the fix)
    adapters: tuple[Adapter, ...] = ()
    kind: str = "chat"  # chat, embed or rerank (mvgen/pooling.py)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.served_name, *self.aliases)

    @property
    def pooling(self) -> bool:
        return self.kind != "chat"


@dataclass(frozen=True)
class Deployment:
    """One model on one GPU type: a vLLM container pool."""

    model: Model
    gpu: Gpu
    settings: Settings
    checkpoint: Checkpoint  # what vLLM loads here: hf_id, or per_gpu.<gpu>.checkpoint
    architecture: Architecture | None  # of that checkpoint; None when unknown
    unknown_reason: str | None = None  # why architecture is None (names the fix)
    # Where deployments.yaml set each setting, for error paths: setting -> its key in the
    # layer that won; extra_args item by item, since they add up across layers.
    setting_paths: Mapping[str, YamlPath] = field(default_factory=dict, compare=False)
    extra_args_paths: tuple[YamlPath, ...] = field(default=(), compare=False)
    # --max-lora-rank: the adapters' largest rank rounded up to a value vLLM accepts; None
    # without adapters, or while a rank is unknown (validation refuses that)
    max_lora_rank: int | None = None

    @property
    def adapters(self) -> tuple[Adapter, ...]:
        """The model's adapters this GPU loads."""
        return tuple(a for a in self.model.adapters if self.gpu.key in a.gpus)

    @property
    def max_loras(self) -> int:
        """--max-loras: adapters one batch may mix, each a slot of GPU memory (fit.py)."""
        return self.settings.max_loras or min(len(self.adapters), DEFAULT_MAX_LORAS) or 1

    @property
    def gpu_spec(self) -> str:
        return self.gpu.spec(self.settings.gpu_count)

    @property
    def vllm_env(self) -> dict[str, str]:
        """Environment for the vLLM process: sleep mode's /sleep and /wake_up routes need
        the dev server mode (they stay on the container-private port)."""
        return {"VLLM_SERVER_DEV_MODE": "1"} if self.settings.gpu_snapshot else {}

    @property
    def route(self) -> str:
        """LiteLLM route name: <model>-<gpu>."""
        return f"{self.model.key}-{self.gpu.key}"

    def vllm_command(self) -> list[str]:
        """The `vllm serve` command line: model first, as newer vLLM requires. A per-GPU
        checkpoint changes what is loaded, never the names clients use."""
        s = self.settings
        cmd = ["vllm", "serve", self.checkpoint.hf_id]
        if self.checkpoint.revision:
            cmd += ["--revision", self.checkpoint.revision]
        cmd += ["--served-model-name", *self.model.names]
        cmd += runner_args(self.model.kind, self.architecture, s.extra_args)
        cmd += ["--host", "127.0.0.1", "--port", str(VLLM_PORT)]
        cmd += ["--max-model-len", str(s.max_model_len)]
        cmd += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
        cmd += ["--tensor-parallel-size", str(s.gpu_count)]
        if s.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(s.max_num_seqs)]
        if s.fast_boot:
            cmd.append("--enforce-eager")
        if self.model.tool_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", self.model.tool_parser]
        if self.model.reasoning_parser:
            cmd += ["--reasoning-parser", self.model.reasoning_parser]
        if s.limit_mm_per_prompt is not None:
            cmd += ["--limit-mm-per-prompt", json.dumps(s.limit_mm_per_prompt, sort_keys=True)]
        if s.quantization:
            cmd += ["--quantization", s.quantization]
        if s.gpu_snapshot:
            cmd.append("--enable-sleep-mode")  # so weights can leave the GPU before the snapshot
        if self.adapters:
            cmd += self.lora_args()
        return cmd + list(s.extra_args)

    def lora_args(self) -> list[str]:
        """vLLM's LoRA flags. Every adapter follows one --lora-modules (repeating the flag
        keeps only the last copy), as JSON naming the base, which /v1/models shows as each
        adapter's parent."""
        modules = [
            json.dumps(
                {"name": a.name, "path": a.local_dir, "base_model_name": self.model.served_name}
            )
            for a in self.adapters
        ]
        args = ["--enable-lora"]
        if self.max_lora_rank is not None:
            args += ["--max-lora-rank", str(self.max_lora_rank)]
        args += ["--max-loras", str(self.max_loras)]
        if len(self.adapters) > self.max_loras:
            # vLLM keeps max_loras adapters in host memory by default, and would read the
            # others from disk again each time one is needed
            args += ["--max-cpu-loras", str(len(self.adapters))]
        return args + ["--lora-modules", *modules]


@dataclass(frozen=True)
class Pool:
    """A Modal class in a gpu-mode app: models sharing every container setting.

    The class is parametrized by model, so each model still gets its own containers;
    models only share a class when their GPU and scaling settings are identical.
    """

    class_name: str
    deployments: tuple[Deployment, ...]

    @property
    def settings(self) -> Settings:
        return self.deployments[0].settings

    @property
    def gpu_spec(self) -> str:
        return self.deployments[0].gpu_spec


@dataclass(frozen=True)
class App:
    name: str  # Modal app name: vllm-h100 or vllm-gemma-3-12b-l40s
    gpu: Gpu
    deployments: tuple[Deployment, ...]
    pools: tuple[Pool, ...]  # gpu mode only; legacy apps run vLLM beside the gateway
    url: str | None  # https://<workspace>--<app>-serve.modal.run, None without a workspace

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")

    @property
    def filename(self) -> str:
        return f"{self.module}.py"

    @property
    def label(self) -> str:
        """The URL label Modal derives from app and function names."""
        return f"{self.name}-{GATEWAY_FUNCTION}"


@dataclass(frozen=True)
class Image:
    vllm: str
    base: str
    python: str


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class LiteLLMSettings:
    timeout: int = 600
    stream_timeout: int = 600
    num_retries: int = 1


@dataclass(frozen=True)
class WarmEntry:
    """One `warm:` entry: from each start of `cron` until the next `until`, in
    `timezone`, the pool of `model` on `gpu` keeps `min_containers` up instead of
    `static_min` (warmup.py checks and prices them; the app's cron functions apply them)."""

    index: int  # position in warm:, for error paths and function names
    cron: str
    timezone: str
    model: str  # model short name
    gpu: str  # GPU short name
    min_containers: int
    until: str  # HH:MM in `timezone`
    end_cron: str  # when `until` comes after a start, as a cron in the same zone
    app: str  # the gpu-mode app whose pool it raises
    static_min: int  # the pool's own min_containers, restored at `until`

    @property
    def path(self) -> str:
        return f"warm[{self.index}]"


@dataclass(frozen=True)
class Plan:
    source: str  # file name of the config, for generated headers
    mode: str
    workspace: str | None
    app_prefix: str
    endpoint_limit: int
    image: Image
    hf_secret: SecretRef
    api_key_secret: SecretRef
    hf_volume: str
    vllm_volume: str
    gpus: tuple[Gpu, ...]
    models: tuple[Model, ...]
    apps: tuple[App, ...]
    litellm: LiteLLMSettings
    warnings: tuple[str, ...] = field(default=())
    fit_min_sequences: int = 4  # fewer full-length sequences in the KV cache: a warning
    warm: tuple[WarmEntry, ...] = ()  # scheduled warm-up, gpu mode only

    @property
    def warm_holds_dict(self) -> str:
        """The modal.Dict in which `mvgen warm` records the minimums it holds."""
        return f"{self.app_prefix}-warm-holds"

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(d for app in self.apps for d in app.deployments)

    @property
    def adapters(self) -> tuple[Adapter, ...]:
        return tuple(a for m in self.models for a in m.adapters)

    @property
    def start_failures_dict(self) -> str:
        """The modal.Dict in which GPU containers record failed starts."""
        return f"{self.app_prefix}-start-failures"

    @property
    def endpoints_needed(self) -> int:
        return len(self.apps)  # each generated app has exactly one web endpoint

    def app_for(self, gpu: str, model: str | None = None) -> App | None:
        for app in self.apps:
            if app.gpu.key != gpu:
                continue
            if self.mode == "gpu" or app.deployments[0].model.key == model:
                return app
        return None
