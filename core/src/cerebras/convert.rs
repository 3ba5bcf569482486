//! `plan convert-mup`: a standard-parameterization Model Zoo config turned into its μP form,
//! as the Model Zoo's `convert_config_to_mup.py` does, with the Cerebras-GPT paper's base
//! hyperparameters (Dey et al. 2023: base width 256, η_base 6e-3, σ_base 0.08, embedding
//! multiplier 10).
//!
//! With m = `hidden_size` / base width and L layers:
//! - release 2.0.3 writes the scaled initializer stds (embeddings σ, hidden σ/√m, output
//!   σ/√(2mL)), `output_logits_scale` 1/m, `embeddings_scale`, `scale_qk_dot_by_d` and
//!   `adjust_learning_rate: {decoder_kernel: 1/m}`;
//! - release 2.10 writes σ for every initializer (the model scales them), with
//!   `mup_base_hidden_size`, `mup_base_filter_size` (base width × filter/hidden),
//!   `output_logits_alpha` 1, `embeddings_scale` and `scale_qk_dot_by_d`.
//!
//! Both scale the schedule's learning rates so that its peak becomes η_base.

use super::map::Generation;
use super::yaml::{ConfigError, Document};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

/// The base model's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MupBase {
    /// Width D₀ the hyperparameters were tuned at (default 256).
    pub base_width: usize,
    /// η_base: the peak learning rate (default 6e-3).
    pub base_lr: f64,
    /// σ_base: the embeddings' init std (default 0.08).
    pub init_std: f64,
    /// Multiplier of the embedding output (default 10).
    pub embed_mult: f64,
}

impl Default for MupBase {
    fn default() -> Self {
        MupBase {
            base_width: 256,
            base_lr: 6e-3,
            init_std: 0.08,
            embed_mult: 10.0,
        }
    }
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// A real number as PyYAML (YAML 1.1, which the Model Zoo reads with) parses it: with a
/// decimal point, and a sign on any exponent.
pub fn real(v: f64) -> Yaml {
    let text = format!("{v:?}");
    let text = match text.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_string()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_string()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
        None => text,
    };
    Yaml::Real(text)
}

fn number(v: &Yaml) -> Option<f64> {
    match v {
        Yaml::Integer(i) => Some(*i as f64),
        other => other.as_f64(),
    }
}

fn hash_at<'a>(root: &'a mut Yaml, path: &[&str]) -> Option<&'a mut Hash> {
    let mut node = root;
    for part in path {
        let Yaml::Hash(hash) = node else {
            return None;
        };
        node = hash.get_mut(&key(part))?;
    }
    match node {
        Yaml::Hash(hash) => Some(hash),
        _ => None,
    }
}

/// The truncation of an initializer in stds (`b / std`), if it is a truncated normal.
fn truncation(init: Option<&Yaml>) -> Option<f64> {
    let Some(Yaml::Hash(h)) = init else {
        return Some(2.0);
    };
    if h.get(&key("name")).and_then(Yaml::as_str) == Some("normal") {
        return None;
    }
    let std = h.get(&key("std")).and_then(number).unwrap_or(1.0);
    Some(h.get(&key("b")).and_then(number).map_or(2.0, |b| b / std))
}

fn initializer(std: f64, truncation: Option<f64>) -> Yaml {
    let mut h = Hash::new();
    h.insert(key("mean"), real(0.0));
    match truncation {
        Some(k) => {
            h.insert(key("name"), key("truncated_normal"));
            h.insert(key("std"), real(std));
            h.insert(key("a"), real(-k * std));
            h.insert(key("b"), real(k * std));
        }
        None => {
            h.insert(key("name"), key("normal"));
            h.insert(key("std"), real(std));
        }
    }
    Yaml::Hash(h)
}

/// Multiplies every learning rate under `node` (`initial_learning_rate`, `end_learning_rate`,
/// `learning_rate`) by `factor`.
fn scale_lrs(node: &mut Yaml, factor: f64) {
    match node {
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                let is_lr = matches!(
                    k.as_str(),
                    Some("initial_learning_rate" | "end_learning_rate" | "learning_rate")
                );
                match number(v) {
                    // 12 significant digits: 6e-5 × 10 is 0.0006, not 0.0006000000000000001.
                    Some(lr) if is_lr => {
                        *v = real(
                            format!("{:.11e}", lr * factor)
                                .parse()
                                .unwrap_or(lr * factor),
                        )
                    }
                    _ => scale_lrs(v, factor),
                }
            }
        }
        Yaml::Array(items) => items.iter_mut().for_each(|v| scale_lrs(v, factor)),
        _ => {}
    }
}

/// The highest learning rate under `node`.
fn peak_lr(node: &Yaml) -> f64 {
    match node {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| match (k.as_str(), number(v)) {
                (
                    Some("initial_learning_rate" | "end_learning_rate" | "learning_rate"),
                    Some(lr),
                ) => lr,
                _ => peak_lr(v),
            })
            .fold(0.0, f64::max),
        Yaml::Array(items) => items.iter().map(peak_lr).fold(0.0, f64::max),
        _ => 0.0,
    }
}

/// The μP form of a standard-parameterization config, in the same generation's layout.
pub fn convert_to_mup(doc: &Document, base: &MupBase) -> Result<Yaml, ConfigError> {
    let generation = Generation::of(doc)?;
    let mut root = doc.root().clone();
    let (model_path, prefix): (&[&str], &str) = match generation {
        Generation::Release2_0 => (&["model"], "model"),
        Generation::Release2_10 => (&["trainer", "init", "model"], "trainer.init.model"),
    };
    let model = hash_at(&mut root, model_path)
        .ok_or_else(|| doc.error(prefix, "missing or not a mapping"))?;
    for mup_key in ["mup_base_hidden_size", "output_logits_scale"] {
        if model.contains_key(&key(mup_key)) {
            return Err(doc.error(&format!("{prefix}.{mup_key}"), "the config is μP already"));
        }
    }
    let get = |model: &Hash, k: &str| -> Result<usize, ConfigError> {
        model
            .get(&key(k))
            .and_then(Yaml::as_i64)
            .filter(|v| *v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| {
                doc.error(
                    &format!("{prefix}.{k}"),
                    "missing or not a positive integer",
                )
            })
    };
    let hidden = get(model, "hidden_size")?;
    let layers = get(model, "num_hidden_layers")?;
    let filter = match model.get(&key("filter_size")) {
        Some(_) => get(model, "filter_size")?,
        None => 4 * hidden,
    };
    if base.base_width == 0 {
        return Err(doc.error("", "the base width must be positive"));
    }
    let m = hidden as f64 / base.base_width as f64;
    let sigma = base.init_std;
    let k = truncation(model.get(&key("embedding_initializer")));
    let (hidden_std, output_std) = match generation {
        Generation::Release2_0 => (sigma / m.sqrt(), sigma / (2.0 * m * layers as f64).sqrt()),
        Generation::Release2_10 => (sigma, sigma),
    };
    model.insert(key("embedding_initializer"), initializer(sigma, k));
    model.insert(key("initializer"), initializer(hidden_std, k));
    model.insert(key("output_layer_initializer"), initializer(output_std, k));
    let embed_mult = if base.embed_mult.fract() == 0.0 && base.embed_mult.abs() < 1e15 {
        Yaml::Integer(base.embed_mult as i64)
    } else {
        real(base.embed_mult)
    };
    match generation {
        Generation::Release2_0 => {
            model.insert(key("scale_qk_dot_by_d"), Yaml::Boolean(true));
            model.insert(key("output_logits_scale"), real(1.0 / m));
            model.insert(key("embeddings_scale"), embed_mult);
        }
        Generation::Release2_10 => {
            let base_filter = base.base_width as f64 * filter as f64 / hidden as f64;
            model.insert(
                key("mup_base_filter_size"),
                if base_filter.fract() == 0.0 {
                    Yaml::Integer(base_filter as i64)
                } else {
                    real(base_filter)
                },
            );
            model.insert(
                key("mup_base_hidden_size"),
                Yaml::Integer(base.base_width as i64),
            );
            model.insert(key("scale_qk_dot_by_d"), Yaml::Boolean(true));
            model.insert(key("output_logits_alpha"), real(1.0));
            model.insert(key("embeddings_scale"), embed_mult);
        }
    }
    scale_schedule_to_base_lr(&mut root, generation, base.base_lr);
    if generation == Generation::Release2_0 {
        if let Some(optimizer) = hash_at(&mut root, &["optimizer"]) {
            let mut adjust = Hash::new();
            adjust.insert(key("decoder_kernel"), real(1.0 / m));
            optimizer.insert(key("adjust_learning_rate"), Yaml::Hash(adjust));
        }
    }
    Ok(root)
}

/// Scales the config's learning-rate schedule to peak at η_base (`base_lr`); a constant rate
/// becomes `base_lr`.
fn scale_schedule_to_base_lr(root: &mut Yaml, generation: Generation, base_lr: f64) {
    let (schedule_path, schedule_key): (&[&str], &str) = match generation {
        Generation::Release2_0 => (&["optimizer"], "learning_rate"),
        Generation::Release2_10 => (&["trainer", "init"], "schedulers"),
    };
    if let Some(parent) = hash_at(root, schedule_path) {
        if let Some(schedule) = parent.get_mut(&key(schedule_key)) {
            match number(schedule) {
                Some(_) => *schedule = real(base_lr),
                None => {
                    let peak = peak_lr(schedule);
                    if peak > 0.0 {
                        scale_lrs(schedule, base_lr / peak);
                    }
                }
            }
        }
    }
}

/// `yaml` as YAML text.
pub fn to_yaml_text(yaml: &Yaml) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter
        .dump(yaml)
        .expect("writing YAML into a String cannot fail");
    out.push('\n');
    out
}
