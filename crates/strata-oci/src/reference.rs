//! Image references: `registry/repository[:tag][@digest]`, as Docker and podman write them.

use std::fmt;

use crate::digest::OciDigest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub reference: Reference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(OciDigest),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct RefError {
    pub input: String,
    pub reason: &'static str,
}

impl ImageRef {
    /// Parses `[registry/]repository[:tag][@sha256:...]`. Without a registry, Docker Hub is meant
    /// (and `library/` is implied for one-part names), as with `docker pull`.
    pub fn parse(input: &str) -> Result<ImageRef, RefError> {
        let fail = |reason| RefError {
            input: input.to_string(),
            reason,
        };
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(OciDigest::parse(d).ok_or_else(|| fail("the digest is not sha256:<hex>"))?),
            ),
            None => (input, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(fail("the repository name is empty"));
        }
        let valid_repo = repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
        if !valid_repo {
            return Err(fail(
                "repository names are lowercase letters, digits and `._-`, separated by `/`",
            ));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if let Some(tag) = &tag {
            let valid = tag.len() <= 128
                && tag
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                return Err(fail("a tag is up to 128 letters, digits and `._-`"));
            }
        }
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => Reference::Tag(t),
            (None, None) => Reference::Tag("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }

    /// The reference as the registry API takes it (a tag or a digest).
    pub fn reference_str(&self) -> String {
        match &self.reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.to_string(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match &self.reference {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let r = ImageRef::parse("localhost:5000/team/busybox:1.36").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/busybox");
        assert_eq!(r.reference, Reference::Tag("1.36".into()));
        let r = ImageRef::parse("debian").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/debian:latest");
        let d = OciDigest::of(b"x");
        let r = ImageRef::parse(&format!("ghcr.io/a/b@{d}")).unwrap();
        assert_eq!(r.reference, Reference::Digest(d));
        assert!(ImageRef::parse("localhost:5000/Upper:tag").is_err());
        assert!(ImageRef::parse("localhost:5000/a:-bad").is_err());
    }
}
