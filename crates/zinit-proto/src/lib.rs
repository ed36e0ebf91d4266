//! zinit's gRPC protocol, generated at build time from `proto/zinit/v1`.
//!
//! This crate holds only generated code: the message types, the `Control`
//! client and server stubs, and the encoded file descriptor set that the
//! server hands to gRPC reflection.

#![allow(missing_docs, unused_qualifications, missing_debug_implementations)]
// A stream's oneof of a small progress step and a larger final result.
#![allow(clippy::large_enum_variant)]

/// Package `zinit.v1`.
pub mod v1 {
    tonic::include_proto!("zinit.v1");
}

/// The encoded `FileDescriptorSet` of every zinit proto file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("zinit_descriptor");
