//! Naming a shared cache: `s3://bucket/prefix`, `oci://host:port/repository`, `file:///dir` (or
//! an absolute path), each optionally followed by `,ro` (read only) or `,rw`.
//!
//! For S3, the endpoint and region come from the URL's query (`?endpoint=...&region=...`), else
//! from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, and the region from `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, the profile's `region`, or (for AWS itself) the instance metadata, as the
//! AWS tools take them; a custom endpoint is addressed path-style (what self-hosted servers
//! expect), AWS itself virtual-host-style.

use std::path::PathBuf;

use crate::backend::{CacheBackend, ReadOnly};
use crate::dir::DirBackend;
use crate::registry::RegistryBackend;
use crate::s3::S3Backend;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCacheSpec {
    /// The URL as written, without the access suffix.
    pub url: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid cache `{spec}`: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

/// Parses one spec (`URL[,ro|,rw]`).
pub fn parse_spec(spec: &str) -> Result<SharedCacheSpec, SpecError> {
    let fail = |reason: &str| SpecError {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (url, read_only) = match spec.rsplit_once(',') {
        Some((url, "ro")) => (url, true),
        Some((url, "rw")) => (url, false),
        Some((_, other)) => {
            return Err(fail(&format!(
                "unknown access `{other}` (use `,ro` for read-only or `,rw`)"
            )));
        }
        None => (spec, false),
    };
    let url = url.trim();
    let known = ["s3://", "oci://", "file://", "/"];
    if !known.iter().any(|p| url.starts_with(p)) {
        return Err(fail(
            "expected s3://BUCKET[/PREFIX], oci://HOST[:PORT]/REPOSITORY, file:///DIR or an absolute path",
        ));
    }
    Ok(SharedCacheSpec {
        url: url.to_string(),
        read_only,
    })
}

/// Parses a list of specs separated by whitespace or `;` (the form `STRATA_CACHE` takes).
pub fn parse_specs(list: &str) -> Result<Vec<SharedCacheSpec>, SpecError> {
    list.split(|c: char| c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(parse_spec)
        .collect()
}

/// Opens the backend a spec names. Nothing is contacted yet.
pub fn open_backend(spec: &SharedCacheSpec) -> Result<Box<dyn CacheBackend>, SpecError> {
    let fail = |reason: String| SpecError {
        spec: spec.url.clone(),
        reason,
    };
    let url = spec.url.as_str();
    let backend: Box<dyn CacheBackend> = if let Some(rest) = url.strip_prefix("s3://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(fail("the bucket name is empty".into()));
        }
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        let aws = crate::s3::Environment::of_process();
        let custom =
            param("endpoint").or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        // The instance's region only for AWS itself: a self-hosted S3 needs none.
        let region = param("region")
            .or_else(|| aws.region(custom.is_none()))
            .unwrap_or_else(|| "us-east-1".to_string());
        let path_style = match param("style").as_deref() {
            Some("path") => true,
            Some("virtual") => false,
            Some(other) => return Err(fail(format!("unknown style `{other}` (path or virtual)"))),
            None => custom.is_some(),
        };
        let endpoint = custom.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let credentials = crate::s3::CredentialChain::new(aws);
        Box::new(
            S3Backend::new(
                &endpoint,
                bucket,
                prefix.trim_matches('/'),
                &region,
                path_style,
                credentials,
            )
            .map_err(fail)?,
        )
    } else if let Some(rest) = url.strip_prefix("oci://") {
        let Some((host, repo)) = rest.split_once('/') else {
            return Err(fail("expected oci://HOST[:PORT]/REPOSITORY".into()));
        };
        if repo.is_empty() || host.is_empty() {
            return Err(fail("expected oci://HOST[:PORT]/REPOSITORY".into()));
        }
        Box::new(RegistryBackend::new(host, repo.trim_end_matches('/')))
    } else {
        let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        if !path.is_absolute() {
            return Err(fail("a directory cache needs an absolute path".into()));
        }
        Box::new(DirBackend::new(&path))
    };
    Ok(if spec.read_only {
        Box::new(ReadOnly(backend))
    } else {
        backend
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_with_access_suffixes() {
        let specs = parse_specs(
            "s3://ci/strata?endpoint=http://127.0.0.1:8014,ro; oci://localhost:5000/cache  /mnt/c",
        )
        .unwrap();
        assert_eq!(
            specs,
            vec![
                SharedCacheSpec {
                    url: "s3://ci/strata?endpoint=http://127.0.0.1:8014".into(),
                    read_only: true
                },
                SharedCacheSpec {
                    url: "oci://localhost:5000/cache".into(),
                    read_only: false
                },
                SharedCacheSpec {
                    url: "/mnt/c".into(),
                    read_only: false
                },
            ]
        );
        assert!(parse_specs("ftp://x").is_err());
        assert!(parse_specs("s3://b,readonly").is_err());
    }

    #[test]
    fn opens_each_kind() {
        let open = |s: &str| open_backend(&parse_spec(s).unwrap()).map(|b| b.location());
        assert_eq!(
            open("s3://ci/a/b?endpoint=http://127.0.0.1:8014").unwrap(),
            "s3://ci/a/b"
        );
        assert_eq!(
            open("oci://localhost:5000/team/cache").unwrap(),
            "oci://localhost:5000/team/cache"
        );
        assert_eq!(open("file:///srv/cache").unwrap(), "file:///srv/cache");
        assert!(open("oci://localhost:5000").is_err());
        let ro = open_backend(&parse_spec("/srv/cache,ro").unwrap()).unwrap();
        assert_eq!(ro.access(), crate::Access::ReadOnly);
    }
}
