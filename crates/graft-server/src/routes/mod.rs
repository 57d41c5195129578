//! The HTTP handlers, one module per endpoint family.

pub mod adapters;
pub mod anthropic;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod llama_cpp;
pub mod models;
pub mod ollama;
pub mod params;
pub mod projects;
pub mod responses;
pub mod scoring;
pub mod sse;
pub mod system;
pub mod tabby;
pub mod tokenize;
pub mod tools;
