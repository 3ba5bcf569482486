//! Gradients packed into a few flat buffers and averaged over the ranks with one all-reduce
//! per buffer, once per optimizer step (as PyTorch DDP's buckets, without the overlap). The
//! gradients are views into the buffers (DDP's `gradient_as_bucket_view=True`): backward
//! accumulates straight into them, so the all-reduce needs no copies in or out.

use super::{DistError, ProcessGroup};
use crate::shim::set_grad;
use std::ops::Range;
use tch::{Kind, Tensor};

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

/// Splits `params` (in order) into runs of one dtype and device of at most `bucket_bytes` each
/// (a larger parameter gets a run of its own).
pub fn bucket_ranges(params: &[Tensor], bucket_bytes: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0usize;
    for (i, p) in params.iter().enumerate() {
        let size = p.numel() * p.kind().elt_size_in_bytes();
        let fits = ranges.last().is_some_and(|r| {
            let head = &params[r.start];
            head.kind() == p.kind() && head.device() == p.device() && bytes + size <= bucket_bytes
        });
        match ranges.last_mut() {
            Some(r) if fits => {
                r.end = i + 1;
                bytes += size;
            }
            _ => {
                ranges.push(i..i + 1);
                bytes = size;
            }
        }
    }
    ranges
}

/// One zeroed flat buffer of dtype `kind` per range of `params` (on the parameters' device),
/// each parameter's `.grad` a view into it: backward accumulates into the buffer in place.
pub fn flat_grad_buffers(params: &[Tensor], ranges: &[Range<usize>], kind: Kind) -> Vec<Tensor> {
    ranges
        .iter()
        .map(|range| {
            let params = &params[range.clone()];
            let numel: usize = params.iter().map(Tensor::numel).sum();
            let flat = Tensor::zeros([numel as i64], (kind, params[0].device()));
            let mut offset = 0i64;
            for p in params {
                let n = p.numel() as i64;
                let view = flat.narrow(0, offset, n).view(p.size().as_slice());
                set_grad(p, &view).expect("a gradient view of the parameter's shape");
                offset += n;
            }
            flat
        })
        .collect()
}

impl GradBuckets {
    /// Buckets for `params`, in order, of at most `bucket_bytes` each.
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> GradBuckets {
        let ranges = bucket_ranges(params, bucket_bytes);
        let kind = params.first().map_or(Kind::Float, Tensor::kind);
        GradBuckets::from_buffers(flat_grad_buffers(params, &ranges, kind))
    }

    /// Buckets over flat buffers the gradients are views into already
    /// ([`flat_grad_buffers`]; bf16-pure's fp32 main gradients).
    pub fn from_buffers(buffers: Vec<Tensor>) -> GradBuckets {
        GradBuckets {
            buckets: buffers.into_iter().map(|flat| Bucket { flat }).collect(),
        }
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

    /// Replaces every gradient by its sum over the ranks: an all-reduce per bucket, in place
    /// (the trainer divides by the loss tokens of every rank when it clips). A parameter
    /// backward did not reach contributes zeros.
    pub fn all_reduce_sum(&mut self, group: &ProcessGroup) -> Result<(), DistError> {
        tch::no_grad(|| {
            self.buckets
                .iter()
                .try_for_each(|bucket| group.all_reduce_sum(&bucket.flat))
        })
    }

    /// Replaces every gradient by its mean over the ranks: [`all_reduce_sum`](Self::all_reduce_sum)
    /// and a scale per bucket.
    pub fn all_reduce_mean(&mut self, group: &ProcessGroup) -> Result<(), DistError> {
        self.all_reduce_sum(group)?;
        let scale = 1.0 / group.world_size() as f64;
        tch::no_grad(|| {
            for bucket in &mut self.buckets {
                let _ = bucket.flat.g_mul_scalar_(scale);
            }
        });
        Ok(())
    }
}
