//! Whether a shared hit's layer is restored as an erofs image (`strata run --layer-images`),
//! and the restore itself: the layer archive converted into an image while it downloads,
//! checked against the layer its entry names from the entries the conversion listed (no walk
//! of the mount), then placed and mounted by the local cache (strata-store's
//! `layer_images.rs`).
//!
//! Images need a kernel that mounts erofs from a file and the right to mount: both are probed
//! once per process, with a one-entry image, before the first restore; where either is
//! missing the run restores directories as before and says so once (`layer-images-unavailable`).

use std::io::Read;
use std::sync::OnceLock;

use strata_cache::EntryDocument;
use strata_oci::{ApplyError, Compression, Expected};
use strata_store::LocalCache;

use crate::context::RunContext;
use crate::events::{Event, Reporter};

/// Whether restored layers are kept as images: `--layer-images`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerImages {
    /// Images where the kernel and the permissions allow it, directories elsewhere, without a
    /// word (what a CI image that may or may not have the kernel for it wants).
    Auto,
    /// Images where possible, and a note where not: the user asked for them.
    On,
    /// Restored layers are directories, as locally committed ones are. The engine's default
    /// (`strata shell` and `export`); `strata run` defaults to `Auto`.
    #[default]
    Off,
}

/// Whether this run restores layers as images: asked, and possible here. The first call that
/// finds them impossible tells the user, once per run.
pub(crate) fn restore_as_images(ctx: &RunContext<'_>, reporter: &dyn Reporter) -> bool {
    decide(
        ctx.options.layer_images,
        || probe(ctx.cache),
        || ctx.transfers.note_images_unavailable(),
        reporter,
    )
}

/// `asked`, unless `probe` says images cannot be mounted here; then the user who asked for them
/// (`on`) is told, if `first_to_say` (once per run).
fn decide(
    asked: LayerImages,
    probe: impl FnOnce() -> Result<(), String>,
    first_to_say: impl FnOnce() -> bool,
    reporter: &dyn Reporter,
) -> bool {
    if asked == LayerImages::Off {
        return false;
    }
    match probe() {
        Ok(()) => true,
        Err(reason) => {
            if asked == LayerImages::On && first_to_say() {
                reporter.event(&Event::LayerImagesUnavailable { reason });
            }
            false
        }
    }
}

/// Mounts a one-directory image made for the purpose, once per process: the answer does not
/// change while strata runs (a kernel module loaded meanwhile is not worth a mount per restore).
fn probe(cache: &LocalCache) -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED.get_or_init(|| probe_now(cache)).clone()
}

fn probe_now(cache: &LocalCache) -> Result<(), String> {
    let image = cache.content().temp_file("probe.erofs");
    let at = cache.content().temp_file("probe-mount");
    let result = (|| {
        let empty = cache.content().temp_file("probe-empty");
        std::fs::create_dir(&empty).map_err(|e| format!("{}: {e}", empty.display()))?;
        let out =
            std::fs::File::create_new(&image).map_err(|e| format!("{}: {e}", image.display()));
        let written = out.and_then(|out| {
            strata_oci::erofs::write_image_from_dir(&empty, out)
                .map(drop)
                .map_err(|e| format!("writing a test image: {e}"))
        });
        let _ = std::fs::remove_dir(&empty);
        written?;
        std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
        strata_store::mount_image(&image, &at).map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) {
                format!("this kernel cannot mount erofs images ({e})")
            } else {
                format!("mounting an erofs image from a file failed ({e})")
            }
        })?;
        strata_store::unmount(&at).map_err(|e| format!("unmounting a test image: {e}"))
    })();
    let _ = std::fs::remove_dir(&at);
    let _ = std::fs::remove_file(&image);
    result
}

/// Why a layer could not be restored as an image.
pub(crate) enum ImageRestoreError {
    /// Converting the archive failed (the stream, the archive, or the local disk).
    Convert(ApplyError),
    /// Writing the image file failed.
    Local(strata_store::StoreError),
    /// The archive converted to another layer than the entry names.
    Mismatch(strata_key::LayerDigest),
}

/// Converts the layer archive `blob` into an image of `entry`'s layer as it downloads, and
/// places it in the local cache (mounted). On any failure nothing is left in the cache.
/// Returns the archive's compressed size.
pub(crate) fn restore_image<R: Read + Send>(
    local: &LocalCache,
    blob: R,
    entry: &EntryDocument,
) -> Result<u64, ImageRestoreError> {
    let file = local.layers().image_file();
    let io_err = |e: std::io::Error| {
        ImageRestoreError::Local(strata_store::StoreError::Io {
            path: file.clone(),
            source: e,
        })
    };
    // Written around the page cache: most of a restored layer is never read on this machine.
    let out = strata_oci::erofs::ImageFile::create_new(&file).map_err(io_err)?;
    let expected = Expected {
        digest: Some(entry.archive.digest),
        diff_id: None,
    };
    let discard = |e| {
        let _ = std::fs::remove_file(&file);
        e
    };
    let (converted, out) = strata_oci::erofs::convert_layer(blob, Compression::Zstd, out, expected)
        .map_err(|e| discard(ImageRestoreError::Convert(e)))?;
    out.finish().map_err(|e| discard(io_err(e)))?;
    // The contents stay out of memory until a task reads them; the metadata after them is read
    // by every lookup (a `find` over a 45k-file toolchain reads all of it), so it is read back
    // now, in one sequential read the kernel starts and does not wait for.
    if let Ok(image) = std::fs::File::open(&file) {
        let from = converted.metadata_offset();
        let _ = rustix::fs::fadvise(&image, from, None, rustix::fs::Advice::WillNeed);
    }
    // The archive matched its digest, but the entry names the tree it must convert to: an
    // archive swapped in (digests updated, layer name kept) is caught here.
    let found = converted.layer_digest();
    if found != entry.layer {
        return Err(discard(ImageRestoreError::Mismatch(found)));
    }
    local
        .layers()
        .place_image(&file, &entry.layer)
        .map_err(|e| discard(ImageRestoreError::Local(e)))?;
    Ok(converted.size)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Event>>);

    impl Reporter for Recorded {
        fn event(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn off_never_probes_and_on_restores_images_where_they_mount() {
        let r = Recorded::default();
        let never = || -> Result<(), String> { panic!("probed although images are off") };
        assert!(!decide(LayerImages::Off, never, || true, &r));
        assert!(decide(LayerImages::On, || Ok(()), || true, &r));
        assert!(decide(LayerImages::Auto, || Ok(()), || true, &r));
        assert!(r.0.lock().unwrap().is_empty());
    }

    #[test]
    fn by_default_a_kernel_without_images_restores_directories_quietly() {
        let r = Recorded::default();
        let no_erofs = || Err("this kernel cannot mount erofs images (ENODEV)".to_string());
        assert!(!decide(LayerImages::Auto, no_erofs, || true, &r));
        assert!(r.0.lock().unwrap().is_empty());
    }

    #[test]
    fn where_images_cannot_be_mounted_the_run_restores_directories_and_says_so_once() {
        let r = Recorded::default();
        let said = AtomicBool::new(false);
        let first = || !said.swap(true, Ordering::SeqCst);
        let no_erofs = || Err("this kernel cannot mount erofs images (ENODEV)".to_string());
        assert!(!decide(LayerImages::On, no_erofs, first, &r));
        assert!(!decide(LayerImages::On, no_erofs, first, &r));
        let events = r.0.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], Event::LayerImagesUnavailable { reason } if reason.contains("ENODEV"))
        );
    }
}
