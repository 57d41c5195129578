//! Whether this processor runs the instructions graft was compiled with.
//!
//! graft builds with `-C target-cpu=native` (`.cargo/config.toml`): every crate, candle's
//! quantized kernels included, uses whatever the building machine's CPU has (AVX-512, VNNI).
//! Cargo does not notice when a build folder moves to another CPU (a CI cache restored on
//! another kind of machine, a home folder shared by a cluster's nodes), so a program built on a
//! CPU with AVX-512 would die on one without it with `SIGILL` at its first such instruction,
//! mid-request. [`check`] compares the features this code was compiled for with the ones the
//! processor reports, so graft stops at start-up with a message that says what to do instead.
//!
//! [`model_name`] is the processor's name, for figures' records and `/health`.
//!
//! This module only reads the processor's feature flags and name; it must not decide anything
//! about which kernels run (that is the compiled code's, fixed at build time).

/// The processor's model name as Linux reports it (`unknown` elsewhere, or when unreadable).
pub fn model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Instruction-set features this code was compiled to use that the processor lacks; empty
/// when it runs them all (always on processors other than x86-64).
pub fn missing_features() -> Vec<&'static str> {
    missing(&compiled_features(), detected)
}

/// An error naming what the processor lacks and how to rebuild, when it lacks anything.
pub fn check() -> Result<(), String> {
    let missing = missing_features();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this graft was compiled for a processor with {}, which this one lacks: its build folder \
         was made on another machine (cargo does not rebuild when the processor changes), and it \
         would crash at the first such instruction. Build into a folder of this machine's own: \
         CARGO_TARGET_DIR=target/host-$(scripts/host-cpu) cargo run --release -- up \
         (scripts/test does so by itself)",
        missing.join(", ")
    ))
}

/// The features of `compiled` that `detected` says the processor does not have.
fn missing(compiled: &[&'static str], detected: impl Fn(&str) -> bool) -> Vec<&'static str> {
    compiled.iter().copied().filter(|feature| !detected(feature)).collect()
}

// On x86-64 the processor is asked itself (`x86::has`); elsewhere nothing is compiled in
// beyond the baseline.
#[cfg(target_arch = "x86_64")]
use x86::{compiled_features, has as detected};

#[cfg(not(target_arch = "x86_64"))]
fn compiled_features() -> Vec<&'static str> {
    Vec::new()
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_feature: &str) -> bool {
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// Where `cpuid` reports a feature.
    #[derive(Clone, Copy)]
    enum Word {
        /// Leaf 1, ecx.
        L1Ecx,
        /// Leaf 7 sub-leaf 0, ebx.
        L7Ebx,
        /// Leaf 7 sub-leaf 0, ecx.
        L7Ecx,
        /// Leaf 7 sub-leaf 1, eax.
        L7S1Eax,
        /// Leaf 0x8000_0001, ecx.
        Ext1Ecx,
    }

    /// Which registers the operating system must save for the feature's instructions to run.
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Sse,
        /// The 256-bit registers.
        Avx,
        /// The 512-bit registers and the mask registers.
        Avx512,
    }

    /// One list of the features: the table `has` reads (name, where `cpuid` reports it, which
    /// registers it needs) and `compiled_features`, the ones this crate was compiled with.
    macro_rules! features {
        ($(($feature:tt, $word:ident, $bit:expr, $state:ident)),* $(,)?) => {
            const FEATURES: &[(&str, Word, u32, State)] = &[$(($feature, Word::$word, $bit, State::$state)),*];

            /// The features of [`FEATURES`] this crate was compiled to use.
            pub fn compiled_features() -> Vec<&'static str> {
                let mut features = Vec::new();
                $(
                    if cfg!(target_feature = $feature) {
                        features.push($feature);
                    }
                )*
                features
            }
        };
    }

    // The features `-C target-cpu=native` turns on that x86-64 machines differ in, the vector
    // ones first (what candle, gemm and mistralrs's kernels are compiled to use), with their
    // place in `cpuid` (Intel's Software Developer's Manual, vol. 2, CPUID).
    features!(
        ("avx512f", L7Ebx, 16, Avx512),
        ("avx512bw", L7Ebx, 30, Avx512),
        ("avx512cd", L7Ebx, 28, Avx512),
        ("avx512dq", L7Ebx, 17, Avx512),
        ("avx512vl", L7Ebx, 31, Avx512),
        ("avx512vnni", L7Ecx, 11, Avx512),
        ("avx512bf16", L7S1Eax, 5, Avx512),
        ("avx512bitalg", L7Ecx, 12, Avx512),
        ("avx512ifma", L7Ebx, 21, Avx512),
        ("avx512vbmi", L7Ecx, 1, Avx512),
        ("avx512vbmi2", L7Ecx, 6, Avx512),
        ("avx512vpopcntdq", L7Ecx, 14, Avx512),
        ("avxvnni", L7S1Eax, 4, Avx),
        ("avx2", L7Ebx, 5, Avx),
        ("avx", L1Ecx, 28, Avx),
        ("fma", L1Ecx, 12, Avx),
        ("f16c", L1Ecx, 29, Avx),
        ("gfni", L7Ecx, 8, Sse),
        ("vaes", L7Ecx, 9, Avx),
        ("vpclmulqdq", L7Ecx, 10, Avx),
        ("bmi1", L7Ebx, 3, Sse),
        ("bmi2", L7Ebx, 8, Sse),
        ("lzcnt", Ext1Ecx, 5, Sse),
        ("popcnt", L1Ecx, 23, Sse),
        ("movbe", L1Ecx, 22, Sse),
        ("sse4.2", L1Ecx, 20, Sse),
        ("sse4.1", L1Ecx, 19, Sse),
        ("ssse3", L1Ecx, 9, Sse),
        ("pclmulqdq", L1Ecx, 1, Sse),
        ("aes", L1Ecx, 25, Sse),
        ("sha", L7Ebx, 29, Sse),
        ("adx", L7Ebx, 19, Sse),
    );

    /// Whether the processor reports `feature` (`cpuid`) and the operating system saves the
    /// registers its instructions use (`xgetbv`); a feature not in [`FEATURES`] counts as
    /// present. Not `is_x86_feature_detected!`: it answers yes, without asking, for every
    /// feature the code was compiled with, the very ones this check is about.
    pub fn has(feature: &str) -> bool {
        let Some(&(_, word, bit, state)) = FEATURES.iter().find(|(name, ..)| *name == feature) else {
            return true;
        };
        read(word) & (1 << bit) != 0 && saved(state)
    }

    /// One word of `cpuid`'s answers; 0 where the processor has no such leaf (a leaf above
    /// the highest one it reports is never asked for).
    fn read(word: Word) -> u32 {
        match word {
            Word::L1Ecx => __cpuid(1).ecx,
            Word::L7Ebx | Word::L7Ecx | Word::L7S1Eax => {
                if __cpuid(0).eax < 7 {
                    return 0;
                }
                match word {
                    Word::L7Ebx => __cpuid_count(7, 0).ebx,
                    Word::L7Ecx => __cpuid_count(7, 0).ecx,
                    _ if __cpuid_count(7, 0).eax >= 1 => __cpuid_count(7, 1).eax,
                    _ => 0,
                }
            }
            Word::Ext1Ecx => {
                if __cpuid(0x8000_0000).eax < 0x8000_0001 {
                    return 0;
                }
                __cpuid(0x8000_0001).ecx
            }
        }
    }

    /// Whether the operating system saves the registers `state` names (XCR0).
    fn saved(state: State) -> bool {
        let needed = match state {
            State::Sse => return true,
            State::Avx => 0b110,
            State::Avx512 => 0b1110_0110,
        };
        if __cpuid(1).ecx & (1 << 27) == 0 {
            return false;
        }
        // SAFETY: `xgetbv` exists where `cpuid` reports OSXSAVE, as it just did.
        let xcr0 = unsafe { xgetbv0() };
        xcr0 & needed == needed
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        _xgetbv(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    fn runtime(feature: &str) -> bool {
        match feature {
            "sse4.1" => std::arch::is_x86_feature_detected!("sse4.1"),
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "ssse3" => std::arch::is_x86_feature_detected!("ssse3"),
            "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            _ => unreachable!("{feature}"),
        }
    }

    #[test]
    fn a_processor_without_a_compiled_feature_is_named_with_it() {
        let has = |feature: &str| !feature.starts_with("avx512");
        assert_eq!(missing(&["avx2", "avx512f", "fma", "avx512vnni"], has), ["avx512f", "avx512vnni"]);
        assert!(missing(&["avx2", "fma"], has).is_empty());
    }

    #[test]
    fn the_processor_the_tests_run_on_runs_what_they_were_compiled_with() {
        // The test binary was built on this machine (or this check is what should fail).
        assert_eq!(check(), Ok(()));
        if cfg!(all(target_arch = "x86_64", target_feature = "avx2")) {
            assert!(compiled_features().contains(&"avx2"));
            assert!(detected("avx2"));
        }
        #[cfg(target_arch = "x86_64")]
        {
            // The processor's own answers agree with the standard library's (which answers yes
            // for what was compiled in, true here as the check above passed).
            let base = [
                "sse4.1",
                "sse4.2",
                "ssse3",
                "popcnt",
                "avx",
                "avx2",
                "fma",
                "avx512f",
                "avx512vnni",
                "avxvnni",
            ];
            for feature in base {
                assert_eq!(detected(feature), runtime(feature), "{feature}");
            }
        }
    }
}
