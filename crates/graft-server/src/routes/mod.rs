//! HTTP handlers, one module per group of endpoints.

pub mod chat;
pub mod models;
pub mod system;
