"""A small LLaMA causal LM in eager PyTorch, the way a user would write it (or get it from HF
transformers): RMSNorm, RoPE in the HF half-split layout, grouped-query attention, SwiGLU MLP,
optional q/k/v/o biases, tied or untied head, and a key/value cache for decoding."""
import math

import torch
import torch.nn.functional as F


class ConfigError(Exception):
    pass


class Llama:
    def __init__(self, config: dict, tensors: dict):
        if config.get("model_type") not in ("llama", "mistral"):
            raise ConfigError(f"model_type {config.get('model_type')!r}: only LLaMA-family checkpoints are supported")
        if config.get("rope_scaling") not in (None,):
            raise ConfigError("rope_scaling is not supported")
        if config.get("prunelab_layers") is not None:
            raise ConfigError("per-layer shapes (prunelab_layers) are not supported")
        if config.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {config.get('hidden_act')!r} is not supported (silu only)")
        self.D = config["hidden_size"]
        self.H = config["num_attention_heads"]
        self.KV = config.get("num_key_value_heads", self.H)
        self.hd = config.get("head_dim", self.D // self.H)
        self.L = config["num_hidden_layers"]
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.theta = config.get("rope_theta", 10000.0)
        t = tensors
        self.embed = t["model.embed_tokens.weight"]
        # Where the weights are (the caller moved them): every tensor made here goes there too.
        self.device = self.embed.device
        self.head = t["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else t["lm_head.weight"]
        self.norm = t["model.norm.weight"]
        self.layers = []
        for i in range(self.L):
            p = f"model.layers.{i}."
            self.layers.append({
                "attn_norm": t[p + "input_layernorm.weight"],
                "mlp_norm": t[p + "post_attention_layernorm.weight"],
                **{r: t[f"{p}self_attn.{r}_proj.weight"] for r in ("q", "k", "v", "o")},
                **{f"b{r}": t.get(f"{p}self_attn.{r}_proj.bias") for r in ("q", "k", "v", "o")},
                **{r: t[f"{p}mlp.{r}_proj.weight"] for r in ("gate", "up", "down")},
            })
        half = self.hd // 2
        self.inv_freq = 1.0 / (self.theta ** (torch.arange(half, dtype=torch.float64) * 2 / self.hd))

    def new_cache(self) -> dict:
        return {"k": [None] * self.L, "v": [None] * self.L, "length": 0}

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def _rope_tables(self, past: int, T: int):
        pos = torch.arange(past, past + T, dtype=torch.float64)
        ang = torch.outer(pos, self.inv_freq)
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos().to(self.device, torch.float32), ang.sin().to(self.device, torch.float32)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [heads, T, hd]; rotate_half pairs dimension i with i + hd/2.
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
        return x * cos + rot * sin

    @torch.inference_mode()
    def forward(self, ids: list, cache: dict = None) -> torch.Tensor:
        """Logits [T, vocab] of one sequence (batch 1) at positions past..past+T-1."""
        T = len(ids)
        past = cache["length"] if cache else 0
        cos, sin = self._rope_tables(past, T)
        x = self.embed[torch.tensor(ids, dtype=torch.long, device=self.device)]
        g = self.H // self.KV
        scale = 1.0 / math.sqrt(self.hd)
        Tk = past + T
        mask = None
        if T > 1:
            # Query t (absolute past + t) sees keys 0..past + t.
            mask = torch.full((T, Tk), float("-inf"), device=self.device).triu(past + 1)
        for i, l in enumerate(self.layers):
            h = self._rms(x, l["attn_norm"])
            q = F.linear(h, l["q"], l["bq"]).view(T, self.H, self.hd).transpose(0, 1)
            k = F.linear(h, l["k"], l["bk"]).view(T, self.KV, self.hd).transpose(0, 1)
            v = F.linear(h, l["v"], l["bv"]).view(T, self.KV, self.hd).transpose(0, 1)
            q = self._rope(q, cos, sin)
            k = self._rope(k, cos, sin)
            if cache is not None:
                if cache["k"][i] is not None:
                    k = torch.cat([cache["k"][i], k], dim=1)
                    v = torch.cat([cache["v"][i], v], dim=1)
                cache["k"][i], cache["v"][i] = k, v
            # The g query heads of a key/value head attend together: [KV, g*T, hd] against [KV, Tk, hd].
            qg = q.reshape(self.KV, g * T, self.hd)
            s = torch.matmul(qg, k.transpose(1, 2)) * scale
            if mask is not None:
                s = (s.view(self.KV, g, T, Tk) + mask).view(self.KV, g * T, Tk)
            a = torch.matmul(torch.softmax(s, dim=-1), v)
            a = a.view(self.H, T, self.hd).transpose(0, 1).reshape(T, self.H * self.hd)
            x = x + F.linear(a, l["o"], l["bo"])
            h = self._rms(x, l["mlp_norm"])
            x = x + F.linear(F.silu(F.linear(h, l["gate"])) * F.linear(h, l["up"]), l["down"])
        if cache is not None:
            cache["length"] = Tk
        return F.linear(self._rms(x, self.norm), self.head)
