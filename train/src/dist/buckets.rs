//! Gradients packed into a few flat buffers and averaged over the ranks with one all-reduce
//! per buffer, once per optimizer step (as PyTorch DDP's buckets, without the overlap).

use super::{DistError, ProcessGroup};
use tch::Tensor;

/// Bytes per bucket (DDP's default `bucket_cap_mb`).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Parameters of one dtype and device and the flat buffer their gradients travel in.
struct Bucket {
    params: Vec<Tensor>,
    flat: Tensor,
}

/// The parameters' gradients in buckets of at most [`BUCKET_BYTES`] (a larger parameter gets
/// one of its own). Every rank must build it from the same parameters in the same order.
pub struct GradBuckets {
    buckets: Vec<Bucket>,
}

impl GradBuckets {
    /// Buckets for `params`, in order, of at most `bucket_bytes` each.
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> GradBuckets {
        let mut groups: Vec<Vec<Tensor>> = Vec::new();
        let mut bytes = 0usize;
        for p in params {
            let size = p.numel() * p.kind().elt_size_in_bytes();
            let fits = groups.last().is_some_and(|g| {
                let head = &g[0];
                head.kind() == p.kind()
                    && head.device() == p.device()
                    && bytes + size <= bucket_bytes
            });
            if fits {
                groups.last_mut().expect("a group").push(p.shallow_clone());
                bytes += size;
            } else {
                groups.push(vec![p.shallow_clone()]);
                bytes = size;
            }
        }
        let buckets = groups
            .into_iter()
            .map(|params| {
                let numel: usize = params.iter().map(Tensor::numel).sum();
                let flat = Tensor::zeros([numel as i64], (params[0].kind(), params[0].device()));
                Bucket { params, flat }
            })
            .collect();
        GradBuckets { buckets }
    }

    /// Number of buckets (all-reduces per step).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there is nothing to reduce.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Replaces every gradient by its mean over the ranks. A missing gradient counts as zeros
    /// (and stays missing).
    pub fn all_reduce_mean(&mut self, group: &ProcessGroup) -> Result<(), DistError> {
        let scale = 1.0 / group.world_size() as f64;
        tch::no_grad(|| {
            for bucket in &mut self.buckets {
                let mut offset = 0i64;
                let mut grads = Vec::with_capacity(bucket.params.len());
                for p in &bucket.params {
                    let n = p.numel() as i64;
                    let mut slot = bucket.flat.narrow(0, offset, n);
                    let grad = p.grad();
                    if grad.defined() {
                        slot.copy_(&grad.reshape([-1]));
                    } else {
                        let _ = slot.zero_();
                    }
                    grads.push((grad, offset, n));
                    offset += n;
                }
                group.all_reduce_sum(&bucket.flat)?;
                let _ = bucket.flat.g_mul_scalar_(scale);
                for (mut grad, offset, n) in grads {
                    if grad.defined() {
                        let reduced = bucket.flat.narrow(0, offset, n);
                        grad.copy_(&reduced.view_as(&grad));
                    }
                }
            }
            Ok(())
        })
    }
}
