//! With the `cuda` feature, compiles `src/cuda/*.cu` to PTX with nvcc (through cudaforge, as
//! candle-kernels does) and writes `ptx.rs`, one `&str` constant per source, into `OUT_DIR`. The target
//! architecture comes from `CUDA_COMPUTE_CAP` (e.g. 80), else from the GPU `nvidia-smi` reports.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    compile_ptx();
}

#[cfg(feature = "cuda")]
fn compile_ptx() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_dir("src/cuda")
        .watch(["src/cuda/common.cuh"])
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()
        .unwrap_or_else(|e| panic!("cannot compile the CUDA kernels: {e}"));
    ptx.write(out_dir.join("ptx.rs"))
        .unwrap_or_else(|e| panic!("cannot write ptx.rs: {e}"));
}
