//! Whether this machine can run graft's CUDA build: NVIDIA's driver library and the CUDA 13
//! libraries candle loads at run time (cuBLAS, cuBLASLt, cuRAND, NVRTC) must be loadable.
//!
//! graft's CUDA build links only the CUDA runtime; candle (through cudarc's dynamic loading)
//! opens the other libraries on first use and *panics* when one is missing. Asking here first
//! turns that into a clear error before any GPU work starts. This module only opens and closes
//! the libraries by name (`dlopen`): it starts nothing on a GPU and needs no `cuda` feature, so
//! its answer on a machine without a GPU is tested like any other code.

use std::ffi::CString;

/// The libraries a CUDA build opens at run time: what each is, and the names cudarc tries
/// (the first that loads is the one it uses; these are among its candidates).
const LIBRARIES: &[(&str, &[&str])] = &[
    ("NVIDIA's driver", &["libcuda.so.1", "libcuda.so"]),
    ("cuBLAS 13", &["libcublas.so.13", "libcublas.so"]),
    ("cuBLASLt 13", &["libcublasLt.so.13", "libcublasLt.so"]),
    ("cuRAND", &["libcurand.so.10", "libcurand.so"]),
    ("NVRTC 13", &["libnvrtc.so.13", "libnvrtc.so"]),
];

/// `Ok` when every library a CUDA build needs at run time loads; otherwise a message naming
/// the first that does not and what to do about it.
pub fn check_libraries() -> Result<(), String> {
    for (what, names) in LIBRARIES {
        if !names.iter().any(|name| loads(name)) {
            let advice = if names[0].starts_with("libcuda.") {
                "this machine has no NVIDIA GPU driver (use device = \"cpu\")"
            } else {
                "install CUDA 13's libraries (NVIDIA's `nvidia-*` Python wheels carry them) and put \
                 their folder on LD_LIBRARY_PATH"
            };
            return Err(format!("{what} ({}) cannot be loaded: {advice}", names[0]));
        }
    }
    Ok(())
}

/// Whether the dynamic loader finds and loads `name` (then unloads it).
fn loads(name: &str) -> bool {
    let Ok(c_name) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c_name` is a valid C string for the call; a handle dlopen returns is closed
    // once and not used after. Loading runs the library's initialisers, which NVIDIA's and
    // the C library's are written to allow.
    unsafe {
        let handle = libc::dlopen(c_name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_of_this_machine_loads_and_a_made_up_one_does_not() {
        assert!(loads("libc.so.6"));
        assert!(!loads("libgraft-no-such-library.so.1"));
        assert!(!loads("bad\0name"));
    }

    #[test]
    fn the_answer_names_the_first_missing_library() {
        match check_libraries() {
            // A machine with the driver and CUDA 13's libraries (a GPU machine).
            Ok(()) => assert!(loads("libcuda.so.1") || loads("libcuda.so")),
            Err(message) => {
                let first_missing = LIBRARIES
                    .iter()
                    .find(|(_, names)| !names.iter().any(|n| loads(n)))
                    .expect("an error means a library is missing");
                assert!(message.contains(first_missing.1[0]), "{message}");
                assert!(message.contains("cannot be loaded"), "{message}");
            }
        }
    }
}
