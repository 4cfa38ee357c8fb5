//! A shared cache in an S3-compatible bucket, under a prefix:
//!
//! ```text
//! <prefix>/entries/<cache key>.json
//! <prefix>/blobs/sha256/<hex>          a blob stored whole
//! <prefix>/blobs/sha256/<hex>.chunks   a streamed blob: the list of its chunks, in order
//! <prefix>/chunks/<upload>/<n>         the chunks of streamed blobs
//! ```
//!
//! Requests are presigned (SigV4) and sent with a plain HTTP client. Credentials are found where
//! the AWS SDKs find them (`credentials.rs`: environment, web identity, shared files and
//! profiles, container credentials, instance metadata) and refreshed before they expire; with
//! none, requests go unsigned (a public bucket). Entries are written with `If-None-Match: *`
//! after checking that the key is free, so the first writer wins on servers that honour the
//! condition; on one that does not, a later writer replaces the entry with another complete one
//! (each entry names only blobs already stored), so readers still never see a broken entry.

mod backend;
mod client;
mod credentials;
mod stream;

pub use backend::S3Backend;
pub use credentials::{AwsCredentials, CredentialChain, CredentialError, Environment};
