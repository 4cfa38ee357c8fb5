use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name([u8; 32]);

        impl $name {
            pub fn from_hash(hash: blake3::Hash) -> Self {
                $name(*hash.as_bytes())
            }
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            pub fn to_hex(&self) -> String {
                blake3::Hash::from(self.0).to_hex().to_string()
            }
            /// The first 12 hex digits: enough to tell entries apart on screen.
            pub fn short(&self) -> String {
                self.to_hex()[..12].to_string()
            }
            pub fn parse(hex: &str) -> Option<Self> {
                blake3::Hash::from_hex(hex).ok().map(Self::from_hash)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl From<$name> for String {
            fn from(d: $name) -> String {
                d.to_hex()
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("invalid digest `{s}`"))
            }
        }
    };
}

digest_type!(
    /// The key a task's result is cached under: the digest of its [`crate::KeyInputs`].
    CacheKey
);
digest_type!(
    /// The content digest of a committed layer (its tree: paths, kinds, modes, owners, contents,
    /// whiteouts; not mtimes).
    LayerDigest
);
digest_type!(
    /// The digest of one file's content.
    ContentDigest
);
digest_type!(
    /// The digest of the workspace files a task sees (paths, modes, contents).
    WorkspaceDigest
);
digest_type!(
    /// The identity of a base filesystem.
    BaseId
);
digest_type!(
    /// The content digest of one artifact another task reads (`${{ tasks.X.artifacts.K }}`):
    /// the tree digest of the artifact's directory in X's layer, so a reader is keyed on the
    /// artifact alone, not on the rest of X's layer.
    ArtifactDigest
);
