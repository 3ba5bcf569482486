//! Trainer tests on CPU, in one binary (each test binary that links libtorch costs link time).

mod dist;
mod hf;
mod model;
mod mup;
mod optim;
mod plan;
mod plot;
mod shim;
mod trainer;
