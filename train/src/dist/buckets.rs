//! Gradients packed into a few flat buffers and averaged over the ranks with one all-reduce
//! per buffer, once per optimizer step (as PyTorch DDP's buckets, without the overlap). The
//! gradients are views into the buffers (DDP's `gradient_as_bucket_view=True`): backward
//! accumulates straight into them, so the all-reduce needs no copies in or out.

use super::{DistError, ProcessGroup};
use crate::shim::set_grad;
use tch::Tensor;

/// Bytes per bucket (DDP's default `bucket_cap_mb`).
pub const BUCKET_BYTES: usize = 25 << 20;

/// The flat buffer the gradients of parameters of one dtype and device live in.
struct Bucket {
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
                let mut offset = 0i64;
                for p in &params {
                    let n = p.numel() as i64;
                    let view = flat.narrow(0, offset, n).view(p.size().as_slice());
                    set_grad(p, &view).expect("a gradient view of the parameter's shape");
                    offset += n;
                }
                Bucket { flat }
            })
            .collect();
        GradBuckets { buckets }
    }

    /// Zeroes every gradient: one fill per bucket. (The gradients stay defined: they are the
    /// buckets' views, which backward adds into.)
    pub fn zero_grad(&mut self) {
        for bucket in &mut self.buckets {
            let _ = bucket.flat.zero_();
        }
    }

    /// Number of buckets (all-reduces per step).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether there is nothing to reduce.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Replaces every gradient by its mean over the ranks: an all-reduce and a scale per
    /// bucket, in place. A parameter backward did not reach contributes zeros.
    pub fn all_reduce_mean(&mut self, group: &ProcessGroup) -> Result<(), DistError> {
        let scale = 1.0 / group.world_size() as f64;
        tch::no_grad(|| {
            for bucket in &mut self.buckets {
                group.all_reduce_sum(&bucket.flat)?;
                let _ = bucket.flat.g_mul_scalar_(scale);
            }
            Ok(())
        })
    }
}
