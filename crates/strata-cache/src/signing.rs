//! Signed entries: ed25519 keys written `NAME:BASE64` as Nix writes its binary-cache keys, the
//! canonical form of an entry that a signature covers, signing and verifying.
//!
//! A secret key is `NAME:` followed by the base64 of 64 bytes (the 32-byte seed, then the
//! 32-byte public key: what `nix-store --generate-binary-cache-key` and `strata cache keygen`
//! write). A public key is `NAME:` followed by the base64 of
//! its 32 bytes. A name is what a signature is filed under, so that a reader knows which of its
//! trusted keys to try: letters, digits, `.`, `_` and `-` (`ci-main-1`, `cache.example.org-1`).
//!
//! **What a signature covers** ([`signed_form`]): the domain tag `strata-entry-signature-v1`
//! and a newline, then the entry document as canonical JSON — every member except
//! `signatures`, object members sorted by name, no whitespace — as this version of strata
//! writes it. So the key, task, layer digest, archive digest, size and `diff_id`, env, recorded
//! inputs, workspace files, log, exit code and timing are all covered: change any of them and
//! the signature no longer verifies. A member that a reader does not know is not in its
//! canonical form, so an entry written by a strata with a different entry format does not
//! verify (it is refused, never trusted blindly).
//!
//! Secret keys never appear in messages: errors about them name where they came from, never
//! their data.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use serde_json::Value;

use crate::entry::{EntryDocument, EntrySignature};

/// Separates strata's entry signatures from anything else the same key could sign.
const SIGNATURE_DOMAIN: &[u8] = b"strata-entry-signature-v1\n";

/// At most this many signatures of one entry are checked (an entry carries one per key its
/// writer holds: a handful).
const MAX_CHECKED_SIGNATURES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected NAME:BASE64 (a key as `strata cache keygen` writes it)")]
    Shape,
    #[error(
        "key name `{name}` is not valid: use letters, digits, `.`, `_` and `-` (for example `ci-main-1`)"
    )]
    Name { name: String },
    #[error("the data of key `{name}` is not valid base64")]
    Base64 { name: String },
    #[error("key `{name}` is {found} bytes long, expected {expected}")]
    Length {
        name: String,
        found: usize,
        expected: &'static str,
    },
    /// A secret key where a public one was expected: it is not repeated, and must not be shared.
    #[error(
        "key `{name}` is a secret key: give its public key instead (`strata cache keygen` writes both), and keep the secret one out of configuration that others read"
    )]
    SecretWherePublic { name: String },
    #[error("key `{name}` is a public key, not a secret key")]
    PublicWhereSecret { name: String },
    #[error("the two halves of secret key `{name}` do not belong together (the key is damaged)")]
    Mismatch { name: String },
    #[error("key `{name}` is not a valid ed25519 public key")]
    Invalid { name: String },
    #[error("cannot read key file {path}: {message}")]
    File { path: String, message: String },
    #[error("no randomness available to make a key: {message}")]
    Random { message: String },
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(KeyError::Name {
            name: name.to_string(),
        })
    }
}

/// Splits `NAME:BASE64` and decodes the data. Nothing of the data is ever put in an error.
fn split_key(text: &str) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), KeyError> {
    let (name, data) = text.trim().split_once(':').ok_or(KeyError::Shape)?;
    check_name(name)?;
    let bytes = BASE64.decode(data.trim()).map_err(|_| KeyError::Base64 {
        name: name.to_string(),
    })?;
    Ok((name.to_string(), zeroize::Zeroizing::new(bytes)))
}

/// A public key that verifies signatures, with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// Parses `NAME:BASE64` (32 bytes).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split_key(text)?;
        match bytes.len() {
            32 => {}
            64 => return Err(KeyError::SecretWherePublic { name }),
            found => {
                return Err(KeyError::Length {
                    name,
                    found,
                    expected: "32 (an ed25519 public key)",
                });
            }
        }
        let array: [u8; 32] = bytes[..].try_into().expect("length checked");
        let key = ed25519_dalek::VerifyingKey::from_bytes(&array)
            .map_err(|_| KeyError::Invalid { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = BASE64.decode(signature) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Parses a list of public keys separated by whitespace (the form `STRATA_TRUSTED_KEYS` takes).
/// An error says which item (1-based) is wrong.
pub fn parse_public_keys(list: &str) -> Result<Vec<PublicKey>, (usize, KeyError)> {
    list.split_whitespace()
        .enumerate()
        .map(|(i, text)| PublicKey::parse(text).map_err(|e| (i + 1, e)))
        .collect()
}

/// A secret key that signs entries, with its name. Its `Debug` hides the key, and the key is
/// wiped from memory when dropped.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, <secret>)", self.name)
    }
}

impl SigningKey {
    /// Parses `NAME:BASE64`: 64 bytes, the seed and the public key, as Nix and `strata cache
    /// keygen` write it. (A bare 32-byte seed is not accepted: it could not be told from a
    /// public key given by mistake.)
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let (name, bytes) = split_key(text)?;
        let seed: [u8; 32] = match bytes.len() {
            64 => bytes[..32].try_into().expect("length checked"),
            32 => return Err(KeyError::PublicWhereSecret { name }),
            found => {
                return Err(KeyError::Length {
                    name,
                    found,
                    expected: "64 (an ed25519 secret key)",
                });
            }
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(KeyError::Mismatch { name });
        }
        Ok(SigningKey { name, key })
    }

    /// A new random key.
    pub fn generate(name: &str) -> Result<SigningKey, KeyError> {
        check_name(name)?;
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).map_err(|e| KeyError::Random {
            message: e.to_string(),
        })?;
        Ok(SigningKey {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The secret key as `NAME:BASE64` (64 bytes: seed, then public key), to be written to a
    /// file that only its owner reads.
    pub fn secret_text(&self) -> zeroize::Zeroizing<String> {
        let bytes = zeroize::Zeroizing::new(self.key.to_keypair_bytes());
        zeroize::Zeroizing::new(format!("{}:{}", self.name, BASE64.encode(&bytes[..])))
    }

    /// This key's signature of any signed form (a tool cache's document, `tool_cache.rs`).
    pub(crate) fn sign_message(&self, message: &[u8]) -> EntrySignature {
        EntrySignature {
            key: self.name.clone(),
            sig: BASE64.encode(self.key.sign(message).to_bytes()),
        }
    }

    /// This key's signature of `entry` (its [`signed_form`]).
    pub fn sign(&self, entry: &EntryDocument) -> EntrySignature {
        let signature = self.key.sign(&signed_form(entry));
        EntrySignature {
            key: self.name.clone(),
            sig: BASE64.encode(signature.to_bytes()),
        }
    }
}

/// Reads the signing keys `STRATA_SIGNING_KEY` names: whitespace-separated items, each a secret
/// key (`NAME:BASE64`) or the absolute path of a file holding secret keys (as Nix's
/// `secret-key-files`). An error says which item (1-based) is wrong, never what it holds.
pub fn parse_signing_keys(list: &str) -> Result<Vec<SigningKey>, (usize, KeyError)> {
    let mut keys = Vec::new();
    for (i, item) in list.split_whitespace().enumerate() {
        if item.starts_with('/') {
            let text = std::fs::read_to_string(item).map_err(|e| {
                (
                    i + 1,
                    KeyError::File {
                        path: item.to_string(),
                        message: e.to_string(),
                    },
                )
            })?;
            let text = zeroize::Zeroizing::new(text);
            for key in text.split_whitespace() {
                let key = SigningKey::parse(key).map_err(|e| {
                    (
                        i + 1,
                        KeyError::File {
                            path: item.to_string(),
                            message: e.to_string(),
                        },
                    )
                })?;
                keys.push(key);
            }
        } else {
            keys.push(SigningKey::parse(item).map_err(|e| (i + 1, e))?);
        }
    }
    Ok(keys)
}

/// The bytes a signature of `entry` covers: the domain tag, then the entry as canonical JSON
/// without its `signatures`.
pub fn signed_form(entry: &EntryDocument) -> Vec<u8> {
    let mut value = serde_json::to_value(entry).expect("entries serialize");
    if let Value::Object(members) = &mut value {
        members.remove("signatures");
    }
    let mut out = SIGNATURE_DOMAIN.to_vec();
    write_canonical(&value, &mut out);
    out
}

/// JSON with object members sorted by name (byte order) and no whitespace. Sorted here rather
/// than by `serde_json`'s map, whose order depends on a cargo feature.
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, name).expect("strings serialize");
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
    }
}

/// Why an entry is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("it is not signed")]
    Unsigned,
    #[error("it is signed only by {}, which this cache does not trust", .signers.join(", "))]
    UnknownSigners { signers: Vec<String> },
    /// Signed under the name of a trusted key, but the signature does not match: the entry was
    /// altered after it was signed, or signed by another key of the same name.
    #[error(
        "its signature by `{key}` does not match its content (altered after signing, or signed by another key named `{key}`)"
    )]
    BadSignature { key: String },
}

/// Checks that `entry` carries a valid signature by one of `trusted`, and returns that key's
/// name. As in Nix, signatures by keys not in `trusted` are ignored, and one valid signature
/// by a trusted key is enough.
pub fn verify_entry<'k>(
    entry: &EntryDocument,
    trusted: &'k [PublicKey],
) -> Result<&'k str, Untrusted> {
    verify_signatures(&entry.signatures, trusted, || signed_form(entry))
}

/// The rule of [`verify_entry`] for any signed document: `signed` makes the signed bytes, only
/// once a signature by a trusted key's name is found.
pub(crate) fn verify_signatures<'k>(
    signatures: &[EntrySignature],
    trusted: &'k [PublicKey],
    signed: impl FnOnce() -> Vec<u8>,
) -> Result<&'k str, Untrusted> {
    if signatures.is_empty() {
        return Err(Untrusted::Unsigned);
    }
    let mut signed = Some(signed);
    let mut message: Option<Vec<u8>> = None;
    let mut bad = None;
    for signature in signatures.iter().take(MAX_CHECKED_SIGNATURES) {
        for key in trusted.iter().filter(|k| k.name == signature.key) {
            let message = message.get_or_insert_with(|| (signed.take().expect("made once"))());
            if key.verifies(message, &signature.sig) {
                return Ok(&key.name);
            }
            bad.get_or_insert_with(|| signature.key.clone());
        }
    }
    match bad {
        Some(key) => Err(Untrusted::BadSignature { key }),
        None => {
            let mut signers: Vec<String> = signatures
                .iter()
                .map(|s| format!("`{}`", s.key.escape_debug()))
                .collect();
            signers.dedup();
            Err(Untrusted::UnknownSigners { signers })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ArchiveRef, BlobRef, ENTRY_SCHEMA};
    use std::collections::BTreeMap;
    use strata_key::{
        BaseId, CacheKey, EnvInput, ExportedEnv, KeyInputs, LayerDigest, WorkspaceDigest,
        WorkspaceFile,
    };
    use strata_oci::OciDigest;

    // A key pair made by `nix-store --generate-binary-cache-key` (the example in NixOS's wiki
    // page "Signing store paths"): strata reads Nix's key format.
    const NIX_SECRET: &str = "cache.example.org-1:MKk58wILGij4+VKU5xXESsU+MnslTUKfCjX/9OEXq6c6lhrq8lbOw9UpHeAC46rkpXf7/jJ0KmhnjIXcpVrT0Q==";
    const NIX_PUBLIC: &str = "cache.example.org-1:OpYa6vJWzsPVKR3gAuOq5KV3+/4ydCpoZ4yF3KVa09E=";

    fn inputs(command: &str) -> KeyInputs {
        KeyInputs {
            version: strata_key::KEY_VERSION,
            base: BaseId::from_hash(blake3::hash(b"base")),
            parents: Vec::new(),
            workspace: WorkspaceDigest::from_hash(blake3::hash(b"ws")),
            env: BTreeMap::from([("CI".to_string(), EnvInput::Value("true".into()))]),
            command: command.to_string(),
            executor: "sandbox/1".to_string(),
            artifacts: Vec::new(),
        }
    }

    fn entry() -> EntryDocument {
        let inputs = inputs("make");
        let mut env = ExportedEnv::default();
        env.vars.insert("CC".into(), "gcc".into());
        EntryDocument {
            schema: ENTRY_SCHEMA,
            key: inputs.key(),
            task: "build".into(),
            layer: LayerDigest::from_hash(blake3::hash(b"layer")),
            archive: ArchiveRef {
                digest: OciDigest::of(b"archive"),
                size: 7,
                diff_id: OciDigest::of(b"tar"),
            },
            env,
            inputs,
            workspace_files: Vec::<WorkspaceFile>::new(),
            exit_code: 0,
            duration_ms: 1200,
            log: BlobRef {
                digest: OciDigest::of(b"log"),
                size: 3,
            },
            created_at_ms: 1_700_000_000_000,
            writes_workspace: None,
            signatures: Vec::new(),
        }
    }

    fn signed(key: &SigningKey) -> EntryDocument {
        let mut e = entry();
        e.signatures = vec![key.sign(&e)];
        e
    }

    #[test]
    fn reads_nix_keys_and_their_pair_matches() {
        let secret = SigningKey::parse(NIX_SECRET).unwrap();
        assert_eq!(secret.name(), "cache.example.org-1");
        assert_eq!(secret.public_key().to_string(), NIX_PUBLIC);
        assert_eq!(*secret.secret_text(), NIX_SECRET);
        let public = PublicKey::parse(NIX_PUBLIC).unwrap();
        assert_eq!(public, secret.public_key());
    }

    #[test]
    fn generated_keys_round_trip_through_their_text() {
        let key = SigningKey::generate("ci-main-1").unwrap();
        let again = SigningKey::parse(&key.secret_text()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = PublicKey::parse(&key.public_key().to_string()).unwrap();
        assert_eq!(public, key.public_key());
        assert_ne!(
            SigningKey::generate("ci-main-1").unwrap().public_key(),
            key.public_key(),
            "two generated keys are different"
        );
    }

    #[test]
    fn malformed_keys_are_refused_without_repeating_secrets() {
        let secret_data = NIX_SECRET.split_once(':').unwrap().1;
        let cases: Vec<(&str, KeyError)> = vec![
            ("no-colon", KeyError::Shape),
            (
                ":AAAA",
                KeyError::Name {
                    name: String::new(),
                },
            ),
            (
                "bad name:AAAA",
                KeyError::Name {
                    name: "bad name".into(),
                },
            ),
            ("k:not base64!", KeyError::Base64 { name: "k".into() }),
            (
                "k:AAAA",
                KeyError::Length {
                    name: "k".into(),
                    found: 3,
                    expected: "32 (an ed25519 public key)",
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(PublicKey::parse(text).unwrap_err(), expected, "{text}");
        }
        // A secret key given as a trusted key is refused, and not repeated.
        let e = PublicKey::parse(NIX_SECRET).unwrap_err();
        assert_eq!(
            e,
            KeyError::SecretWherePublic {
                name: "cache.example.org-1".into()
            }
        );
        assert!(!e.to_string().contains(secret_data));
        // A public key given as a secret one.
        assert_eq!(
            SigningKey::parse(NIX_PUBLIC).unwrap_err(),
            KeyError::PublicWhereSecret {
                name: "cache.example.org-1".into()
            }
        );
        // A damaged secret key: its halves disagree. The message does not repeat it.
        let mut damaged = BASE64.decode(secret_data).unwrap();
        damaged[40] ^= 1;
        let text = format!("k:{}", BASE64.encode(&damaged));
        let e = SigningKey::parse(&text).unwrap_err();
        assert_eq!(e, KeyError::Mismatch { name: "k".into() });
        for e in [
            SigningKey::parse(&format!("k:{}!", &secret_data[..20])).unwrap_err(),
            SigningKey::parse(&secret_data[..40]).unwrap_err(),
        ] {
            assert!(!e.to_string().contains(&secret_data[..20]), "{e}");
        }
        assert_eq!(
            format!("{:?}", SigningKey::parse(NIX_SECRET).unwrap()),
            "SigningKey(cache.example.org-1, <secret>)"
        );
    }

    #[test]
    fn key_lists_name_the_bad_item() {
        let key = SigningKey::generate("a").unwrap();
        let list = format!("{}  {}\n", key.public_key(), NIX_PUBLIC);
        assert_eq!(parse_public_keys(&list).unwrap().len(), 2);
        assert_eq!(parse_public_keys("").unwrap().len(), 0);
        let (item, _) = parse_public_keys(&format!("{NIX_PUBLIC} oops")).unwrap_err();
        assert_eq!(item, 2);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{}\n", &*key.secret_text())).unwrap();
        let keys = parse_signing_keys(&format!("{NIX_SECRET} {}", file.display())).unwrap();
        let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["cache.example.org-1", "a"]);
        let (item, e) = parse_signing_keys(&format!("{NIX_SECRET} /nonexistent/key")).unwrap_err();
        assert_eq!(item, 2);
        assert!(e.to_string().contains("/nonexistent/key"), "{e}");
        std::fs::write(&file, "a:AAAA").unwrap();
        let (_, e) = parse_signing_keys(&file.display().to_string()).unwrap_err();
        assert!(e.to_string().contains("64 (an ed25519 secret key)"), "{e}");
    }

    #[test]
    fn the_canonical_form_is_sorted_compact_and_leaves_out_signatures() {
        let key = SigningKey::parse(NIX_SECRET).unwrap();
        let plain = entry();
        let form = signed_form(&plain);
        assert!(form.starts_with(b"strata-entry-signature-v1\n{\"archive\":{\"diff_id\":"));
        let json = std::str::from_utf8(&form[SIGNATURE_DOMAIN.len()..]).unwrap();
        assert!(!json.contains(": ") && !json.contains(", ") && !json.contains('\n'));
        assert!(!json.contains("signatures"));
        // It is the same document, reordered.
        let reparsed: Value = serde_json::from_str(json).unwrap();
        let mut expected = serde_json::to_value(&plain).unwrap();
        expected.as_object_mut().unwrap().remove("signatures");
        assert_eq!(reparsed, expected);
        // Signatures are not part of what they sign.
        assert_eq!(signed_form(&signed(&key)), form);
        // A signed entry survives its trip through JSON.
        let e = signed(&key);
        let back = EntryDocument::from_json(&e.to_json(), &e.key).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            verify_entry(&back, &[key.public_key()]),
            Ok("cache.example.org-1")
        );
    }

    #[test]
    fn entries_verify_only_with_a_trusted_key() {
        let main = SigningKey::generate("ci-main").unwrap();
        let pr = SigningKey::generate("ci-pr").unwrap();
        let impostor = SigningKey::generate("ci-main").unwrap();
        let trusted = [main.public_key()];
        assert_eq!(verify_entry(&signed(&main), &trusted), Ok("ci-main"));
        assert_eq!(verify_entry(&entry(), &trusted), Err(Untrusted::Unsigned));
        assert_eq!(
            verify_entry(&signed(&pr), &trusted),
            Err(Untrusted::UnknownSigners {
                signers: vec!["`ci-pr`".into()]
            })
        );
        assert_eq!(
            verify_entry(&signed(&impostor), &trusted),
            Err(Untrusted::BadSignature {
                key: "ci-main".into()
            })
        );
        // Several signatures: one by a trusted key is enough, whatever the others are.
        let mut both = entry();
        both.signatures = vec![pr.sign(&both), main.sign(&both)];
        assert_eq!(verify_entry(&both, &trusted), Ok("ci-main"));
        assert_eq!(
            verify_entry(&both, &[pr.public_key(), main.public_key()]),
            Ok("ci-pr")
        );
        // A signature that is not base64, or not 64 bytes, is simply wrong.
        let mut garbled = signed(&main);
        garbled.signatures[0].sig = "%%%".into();
        assert!(matches!(
            verify_entry(&garbled, &trusted),
            Err(Untrusted::BadSignature { .. })
        ));
        garbled.signatures[0].sig = BASE64.encode([0u8; 12]);
        assert!(matches!(
            verify_entry(&garbled, &trusted),
            Err(Untrusted::BadSignature { .. })
        ));
    }

    #[test]
    fn tampering_with_any_member_breaks_the_signature() {
        let key = SigningKey::generate("ci-main").unwrap();
        let trusted = [key.public_key()];
        let good = signed(&key);
        type Tampering = Box<dyn Fn(&mut EntryDocument)>;
        let tamperings: Vec<(&str, Tampering)> = vec![
            ("schema", Box::new(|e| e.schema += 1)),
            (
                "key",
                Box::new(|e| e.key = CacheKey::from_hash(blake3::hash(b"other"))),
            ),
            ("task", Box::new(|e| e.task = "deploy".into())),
            (
                "layer",
                Box::new(|e| e.layer = LayerDigest::from_hash(blake3::hash(b"other"))),
            ),
            (
                "archive digest",
                Box::new(|e| e.archive.digest = OciDigest::of(b"swapped")),
            ),
            ("archive size", Box::new(|e| e.archive.size += 1)),
            (
                "archive diff_id",
                Box::new(|e| e.archive.diff_id = OciDigest::of(b"swapped")),
            ),
            (
                "env",
                Box::new(|e| {
                    e.env.vars.insert("CC".into(), "evil".into());
                }),
            ),
            (
                "env path",
                Box::new(|e| e.env.path.push("/tmp/evil".into())),
            ),
            ("inputs", Box::new(|e| e.inputs = inputs("make install"))),
            (
                "workspace files",
                Box::new(|e| {
                    e.workspace_files.push(WorkspaceFile {
                        path: "src/main.c".into(),
                        mode: 0o644,
                        kind: strata_key::FileKind::File {
                            digest: strata_key::FileId::of_bytes(b"x", std::path::Path::new("x"))
                                .unwrap(),
                            size: 1,
                        },
                    })
                }),
            ),
            ("exit code", Box::new(|e| e.exit_code = 1)),
            ("duration", Box::new(|e| e.duration_ms += 1)),
            (
                "log digest",
                Box::new(|e| e.log.digest = OciDigest::of(b"x")),
            ),
            ("log size", Box::new(|e| e.log.size += 1)),
            ("created at", Box::new(|e| e.created_at_ms += 1)),
        ];
        for (what, tamper) in tamperings {
            let mut e = good.clone();
            tamper(&mut e);
            assert_ne!(e, good, "{what}: the tampering changed nothing");
            assert_eq!(
                verify_entry(&e, &trusted),
                Err(Untrusted::BadSignature {
                    key: "ci-main".into()
                }),
                "{what}"
            );
            // The same through the document a reader parses.
            let json = serde_json::to_vec(&e).unwrap();
            let read: EntryDocument = serde_json::from_slice(&json).unwrap();
            assert!(verify_entry(&read, &trusted).is_err(), "{what}");
        }
    }

    #[test]
    fn an_unsigned_reader_reads_signed_entries_and_the_reverse() {
        let key = SigningKey::generate("ci-main").unwrap();
        let e = signed(&key);
        // A reader of the same schema that knows nothing of signatures: the member is unknown
        // to it, and serde ignores unknown members.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct BeforeSigning {
            schema: u32,
            key: CacheKey,
            task: String,
            layer: LayerDigest,
            archive: ArchiveRef,
            env: ExportedEnv,
            inputs: KeyInputs,
            workspace_files: Vec<WorkspaceFile>,
            exit_code: i32,
            duration_ms: u64,
            log: BlobRef,
            created_at_ms: u64,
        }
        let old: BeforeSigning = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(old.key, e.key);
        // An entry written before signing existed has no `signatures` member.
        let mut doc = serde_json::to_value(entry()).unwrap();
        assert!(doc.as_object_mut().unwrap().remove("signatures").is_none());
        let read = EntryDocument::from_json(&serde_json::to_vec(&doc).unwrap(), &e.key).unwrap();
        assert!(read.signatures.is_empty());
    }
}
