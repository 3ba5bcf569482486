//! AdamW (GPT-3 appendix B: β = (0.9, 0.95), ε = 1e-8, decoupled weight decay 0.1 on weights
//! with ≥ 2 dimensions) whose moments are tensors we own, so they can be checkpointed, stepped
//! by libtorch's fused kernel (one call per parameter group), with global-norm clipping.
//!
//! Embeddings are matrices and are decayed, as in nanoGPT and Megatron-LM: the token embedding is
//! also the (tied) output layer, whose weights decay is meant to keep small; biases and LayerNorm
//! gains are not decayed.
//!
//! A group is a (learning-rate multiplier, decayed or not) pair: the standard parameterization
//! has two (decayed, not decayed, both at the scheduled LR); μP adds groups at 1/m of it for
//! the hidden matrices ([`AdamW::for_model`] reads them from the parameter list, [`param_specs`]).
//!
//! With fp32 master weights ([`AdamW::keep_fp32_masters`], for `--dtype bf16-pure`) the model's
//! weights are bf16 and AdamW steps fp32 copies of them with fp32 gradients (the masters'
//! `.grad`, Megatron's `main_grad`), then copies the masters into the bf16 weights.

use crate::shim::{
    clip_grad_norm, foreach_copy_or_add, fused_adamw, grads_to_none, AdamWHyper, ShimError,
};
use h5gpt_core::config::GptConfig;
use h5gpt_core::mup::TensorKind;
use h5gpt_core::params::param_specs;
use std::collections::HashMap;
use tch::{nn, Kind, Tensor};

/// AdamW settings (learning rate aside: it comes from the schedule at every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Weight decay of ≥ 2-D weights.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The `train` options' declared defaults (`--adam-beta1` 0.9, `--adam-beta2` 0.95,
    /// `--adam-eps` 1e-8, `--weight-decay` 0.1: GPT-3's).
    fn default() -> Self {
        use crate::options::filled;
        let builtin = h5gpt_core::options::train::TrainOptions::builtin();
        AdamWConfig {
            beta1: filled(builtin.adam_beta1),
            beta2: filled(builtin.adam_beta2),
            eps: filled(builtin.adam_eps),
            weight_decay: filled(builtin.weight_decay),
        }
    }
}

struct Slot {
    name: String,
    /// The model's variable.
    param: Tensor,
    /// fp32 master weight (bf16-pure), whose `.grad` accumulates the fp32 gradient.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Tensor,
}

impl Slot {
    /// What AdamW steps and whose `.grad` it reads: the master weight, or the variable.
    fn weight(&self) -> &Tensor {
        self.master.as_ref().unwrap_or(&self.param)
    }
}

/// Parameters stepped together: one fused call.
struct Group {
    lr_mult: f64,
    decay: bool,
    slots: Vec<Slot>,
}

/// A parameter group as [`AdamW::param_groups`] describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup<'a> {
    /// Learning rate / the scheduled one.
    pub lr_mult: f64,
    /// Weight decay applied (the config's, or 0).
    pub weight_decay: f64,
    /// Parameter names, sorted.
    pub names: Vec<&'a str>,
}

/// bf16-pure's gradients in flat buffers: the bf16 gradients of the model's weights and the
/// fp32 main gradients of the masters, cut into the same runs of parameters, so one add (or
/// copy) per buffer moves a micro-batch's gradients into the main ones.
struct FlatGrads {
    /// bf16, the variables' `.grad` views; zero before every backward.
    bf16: Vec<Tensor>,
    /// fp32, the masters' `.grad` views.
    main: Vec<Tensor>,
}

/// The optimizer.
pub struct AdamW {
    config: AdamWConfig,
    groups: Vec<Group>,
    /// With fp32 masters: the flat gradient buffers.
    flat: Option<FlatGrads>,
}

impl AdamW {
    /// Collects the trainable variables of `vs` into decay (≥ 2-D) / no-decay groups, all at
    /// the scheduled learning rate.
    pub fn new(vs: &nn::VarStore, config: AdamWConfig) -> AdamW {
        Self::grouped(vs, config, |_, param| (1.0, param.dim() >= 2))
    }

    /// Groups the trainable variables of a model with `model`'s config by the learning-rate
    /// multiplier and decay of their role in the parameter list ([`param_specs`], the rules
    /// [`mup_table`](h5gpt_core::mup::mup_table) shows; two groups under the standard
    /// parameterization, as [`new`](Self::new) makes). A variable the list does not have is
    /// grouped as `new` would.
    pub fn for_model(vs: &nn::VarStore, config: AdamWConfig, model: &GptConfig) -> AdamW {
        let kinds: HashMap<String, TensorKind> = param_specs(model)
            .into_iter()
            .map(|spec| (spec.name.clone(), spec.kind()))
            .collect();
        Self::grouped(vs, config, |name, param| {
            kinds.get(name).map_or((1.0, param.dim() >= 2), |kind| {
                (kind.lr_mult(model), kind.weight_decay())
            })
        })
    }

    /// Groups the trainable variables of `vs` by `assign(name, param)` = (learning-rate
    /// multiplier, decayed). Decayed groups come first, then higher multipliers; names are
    /// sorted within a group.
    pub fn grouped(
        vs: &nn::VarStore,
        config: AdamWConfig,
        assign: impl Fn(&str, &Tensor) -> (f64, bool),
    ) -> AdamW {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<Group> = Vec::new();
        for (name, param) in variables {
            if !param.requires_grad() {
                continue;
            }
            let (lr_mult, decay) = assign(&name, &param);
            let slot = Slot {
                exp_avg: param.zeros_like().detach(),
                exp_avg_sq: param.zeros_like().detach(),
                step: Tensor::zeros([], (Kind::Float, param.device())),
                name,
                param,
                master: None,
            };
            match groups
                .iter_mut()
                .find(|g| g.lr_mult == lr_mult && g.decay == decay)
            {
                Some(group) => group.slots.push(slot),
                None => groups.push(Group {
                    lr_mult,
                    decay,
                    slots: vec![slot],
                }),
            }
        }
        groups.sort_by(|a, b| b.decay.cmp(&a.decay).then(b.lr_mult.total_cmp(&a.lr_mult)));
        AdamW {
            config,
            groups,
            flat: None,
        }
    }

    /// Names of the parameters that are decayed and that are not (over all groups).
    pub fn groups(&self) -> (Vec<&str>, Vec<&str>) {
        let names = |decay: bool| {
            self.groups
                .iter()
                .filter(|g| g.decay == decay)
                .flat_map(|g| g.slots.iter().map(|s| s.name.as_str()))
                .collect()
        };
        (names(true), names(false))
    }

    /// The groups in the order [`step`](Self::step) updates them.
    pub fn param_groups(&self) -> Vec<ParamGroup<'_>> {
        self.groups
            .iter()
            .map(|g| ParamGroup {
                lr_mult: g.lr_mult,
                weight_decay: self.weight_decay(g),
                names: g.slots.iter().map(|s| s.name.as_str()).collect(),
            })
            .collect()
    }

    fn weight_decay(&self, group: &Group) -> f64 {
        if group.decay {
            self.config.weight_decay
        } else {
            0.0
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.groups.iter().flat_map(|g| &g.slots)
    }

    /// Keeps an fp32 master copy of every weight, then casts the model's variables in `vs`
    /// to bf16 (`VarStore::bfloat16`) and puts both gradients in flat buffers of runs of at
    /// most `bucket_bytes` of fp32 (the data-parallel buckets' size, so the buckets can be the
    /// main buffers, [`main_grad_buffers`](Self::main_grad_buffers)): the masters' fp32 `.grad`
    /// (Megatron's `main_grad`) and the variables' bf16 `.grad`, views at the same offsets.
    /// From then on [`accumulate_main_grads`](Self::accumulate_main_grads) moves each
    /// micro-batch's bf16 gradients into the main ones (one add per buffer), [`step`](Self::step)
    /// updates the masters and copies them into the variables, and
    /// [`master_weights`](Self::master_weights) is what a checkpoint saves.
    pub fn keep_fp32_masters(
        &mut self,
        vs: &mut nn::VarStore,
        bucket_bytes: usize,
    ) -> Result<(), ShimError> {
        for slot in self.groups.iter_mut().flat_map(|g| &mut g.slots) {
            let master = tch::no_grad(|| slot.param.to_kind(Kind::Float).copy())
                .detach()
                .set_requires_grad(true);
            slot.master = Some(master);
        }
        vs.bfloat16();
        let (masters, params): (Vec<Tensor>, Vec<Tensor>) = self
            .slots()
            .map(|s| (s.weight().shallow_clone(), s.param.shallow_clone()))
            .unzip();
        let ranges = crate::distributed::bucket_ranges(&masters, bucket_bytes);
        self.flat = Some(FlatGrads {
            main: crate::distributed::flat_grad_buffers(&masters, &ranges, Kind::Float),
            bf16: crate::distributed::flat_grad_buffers(&params, &ranges, Kind::BFloat16),
        });
        Ok(())
    }

    /// With fp32 masters: the flat buffers the main gradients are views into (for the
    /// data-parallel buckets to all-reduce in place).
    pub fn main_grad_buffers(&self) -> Option<Vec<Tensor>> {
        self.flat
            .as_ref()
            .map(|f| f.main.iter().map(Tensor::shallow_clone).collect())
    }

    /// Whether the optimizer steps fp32 masters ([`keep_fp32_masters`](Self::keep_fp32_masters)).
    pub fn has_masters(&self) -> bool {
        self.slots().any(|s| s.master.is_some())
    }

    /// The fp32 master weights by variable name (what a checkpoint saves), when there are.
    pub fn master_weights(&self) -> Option<Vec<(String, Tensor)>> {
        self.has_masters().then(|| {
            self.slots()
                .map(|s| (s.name.clone(), s.weight().shallow_clone()))
                .collect()
        })
    }

    /// The tensors whose `.grad` the step reads (masters, or the variables), sorted by name:
    /// what the gradient buckets of data parallelism reduce.
    pub fn gradient_holders(&self) -> Vec<Tensor> {
        let mut all: Vec<(&str, Tensor)> = self
            .slots()
            .map(|s| (s.name.as_str(), s.weight().shallow_clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, t)| t).collect()
    }

    /// With masters: moves the bf16 gradients of the micro-batch just back-propagated into the
    /// fp32 main gradients (a copy on the first micro-batch of a step, an add after; one per
    /// flat buffer), then zeroes them for the next backward (one fill per buffer). Without:
    /// nothing (backward accumulated into the variables' `.grad`).
    pub fn accumulate_main_grads(&mut self, first: bool) -> Result<(), ShimError> {
        let Some(flat) = &self.flat else {
            return Ok(());
        };
        let (main, bf16): (Vec<&Tensor>, Vec<&Tensor>) = flat.main.iter().zip(&flat.bf16).unzip();
        tch::no_grad(|| {
            foreach_copy_or_add(&main, &bf16, !first)?;
            for buffer in &bf16 {
                let _ = buffer.shallow_clone().zero_();
            }
            Ok(())
        })
    }

    /// Drops every gradient of the variables (`zero_grad(set_to_none=True)`): the next backward
    /// writes each once, instead of a fill with zeros and an add into them. With masters:
    /// nothing (the bf16 buffers are zero after every micro-batch, and the first micro-batch of
    /// the next step overwrites the main gradients).
    pub fn zero_grad(&mut self) -> Result<(), ShimError> {
        if self.flat.is_some() {
            return Ok(());
        }
        grads_to_none(&self.slots().map(|s| &s.param).collect::<Vec<_>>())
    }

    /// The global L2 norm of all gradients as a 0-d f32 tensor on their device, after scaling
    /// them so it is at most `max_norm` (`clip_grad_norm_` with foreach kernels: no per-parameter
    /// kernels, no host sync). `None` when no parameter has a gradient.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Option<Tensor>, ShimError> {
        self.clip_grad_norm_scaled(max_norm, None)
    }

    /// [`clip_grad_norm`](Self::clip_grad_norm) of the gradients × `scale` (a 0-d f32 tensor on
    /// their device; the trainer's 1 / the step's loss tokens): the norm is that of the scaled
    /// gradients, and the one multiply per gradient applies the scale and the clip together.
    pub fn clip_grad_norm_scaled(
        &mut self,
        max_norm: f64,
        scale: Option<&Tensor>,
    ) -> Result<Option<Tensor>, ShimError> {
        let grads: Vec<Tensor> = self
            .slots()
            .map(|s| s.weight().grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(None);
        }
        tch::no_grad(|| clip_grad_norm(&grads.iter().collect::<Vec<_>>(), max_norm, scale))
            .map(Some)
    }

    /// One step at learning rate `lr` (each group at `lr` × its multiplier): one fused call
    /// per group. Where `found_inf` (a 0-d f32 tensor on the parameters' device) is 1, nothing
    /// changes: neither weights, moments nor step counters.
    pub fn step(&mut self, lr: f64, found_inf: Option<&Tensor>) -> Result<(), ShimError> {
        let c = self.config;
        for group in &self.groups {
            let live: Vec<&Slot> = group
                .slots
                .iter()
                .filter(|s| s.weight().grad().defined())
                .collect();
            if live.is_empty() {
                continue;
            }
            let grads: Vec<Tensor> = live.iter().map(|s| s.weight().grad()).collect();
            let hyper = AdamWHyper {
                lr: lr * group.lr_mult,
                beta1: c.beta1,
                beta2: c.beta2,
                weight_decay: self.weight_decay(group),
                eps: c.eps,
            };
            tch::no_grad(|| {
                fused_adamw(
                    &live.iter().map(|s| s.weight()).collect::<Vec<_>>(),
                    &grads.iter().collect::<Vec<_>>(),
                    &live.iter().map(|s| &s.exp_avg).collect::<Vec<_>>(),
                    &live.iter().map(|s| &s.exp_avg_sq).collect::<Vec<_>>(),
                    &live.iter().map(|s| &s.step).collect::<Vec<_>>(),
                    hyper,
                    found_inf,
                )
            })?;
        }
        if self.has_masters() {
            // The bf16 weights from the masters (unchanged where found_inf skipped the step).
            let (params, masters): (Vec<&Tensor>, Vec<&Tensor>) =
                self.slots().map(|s| (&s.param, s.weight())).unzip();
            tch::no_grad(|| foreach_copy_or_add(&params, &masters, false))?;
        }
        Ok(())
    }

    /// The optimizer's state as named tensors (`NAME.exp_avg`, `NAME.exp_avg_sq`, `NAME.step`),
    /// for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots()
            .flat_map(|s| {
                [
                    (format!("{}.exp_avg", s.name), s.exp_avg.shallow_clone()),
                    (
                        format!("{}.exp_avg_sq", s.name),
                        s.exp_avg_sq.shallow_clone(),
                    ),
                    (format!("{}.step", s.name), s.step.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores state written by [`state`](Self::state); every slot must be present.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<(), String> {
        let lookup: std::collections::HashMap<&str, &Tensor> =
            state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for slot in self.groups.iter_mut().flat_map(|g| &mut g.slots) {
            for (suffix, target) in [
                ("exp_avg", &mut slot.exp_avg),
                ("exp_avg_sq", &mut slot.exp_avg_sq),
                ("step", &mut slot.step),
            ] {
                let name = format!("{}.{suffix}", slot.name);
                let saved = lookup
                    .get(name.as_str())
                    .ok_or_else(|| format!("optimizer state has no `{name}`"))?;
                if saved.size() != target.size() {
                    return Err(format!(
                        "`{name}` has shape {:?}, expected {:?}",
                        saved.size(),
                        target.size()
                    ));
                }
                tch::no_grad(|| target.copy_(saved));
            }
        }
        Ok(())
    }
}
