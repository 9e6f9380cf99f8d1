//! The store's GGUF header reader (`gguf::GgufHeader::read_file`) over arbitrary bytes, and every accessor
//! `package` and `inspect` call on a header it accepted. A corrupt file must be an error, never a panic or
//! an allocation beyond the reader's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use models::gguf::{GgufHeader, format_parameter_count, ggml_type_name};

fuzz_target!(|data: &[u8]| {
    let path = fuzz_support::scratch_file("header.gguf");
    std::fs::write(path, data).expect("write the scratch file");
    let Ok(header) = GgufHeader::read_file(path) else {
        return;
    };
    let _ = header.architecture();
    let _ = header.context_length();
    let _ = format_parameter_count(header.parameter_count());
    let _ = header.tensor_bytes();
    let _ = header.quantization();
    let _ = header.text_metadata();
    let _ = header.split_count();
    for tensor in &header.tensors {
        let _ = tensor.byte_size();
        let _ = ggml_type_name(tensor.ggml_type);
    }
});
