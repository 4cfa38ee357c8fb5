//! A layer directory (overlayfs upper dir format) made into an erofs image: every entry with
//! its owner, mode, mtime and xattrs; hard links kept as links; whiteouts and opaque
//! directories as they are, since an erofs lower reads them exactly as a directory lower does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::image::{ImageError, ImageWriter, NodeMeta, Xattrs};

/// Writes the tree under `src` as an erofs image into `out` (a new, empty file).
pub fn write_image_from_dir<W: Write + Seek>(src: &Path, out: W) -> Result<W, ImageError> {
    let root = std::fs::symlink_metadata(src).map_err(|e| at(src, e))?;
    let mut writer = ImageWriter::new(out, meta_of(src, &root)?)?;
    let mut links = HashMap::new();
    add_children(&mut writer, src, &mut Vec::new(), &mut links)?;
    writer.finish()
}

fn at(path: &Path, e: std::io::Error) -> ImageError {
    ImageError::Invalid(format!("{}: {e}", path.display()))
}

fn meta_of(path: &Path, m: &std::fs::Metadata) -> Result<NodeMeta, ImageError> {
    Ok(NodeMeta {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime().max(0) as u64,
        mtime_nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        xattrs: xattrs_of(path)?,
    })
}

fn xattrs_of(path: &Path) -> Result<Xattrs, ImageError> {
    let sys = |e: rustix::io::Errno| at(path, e.into());
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(sys(e)),
        }
    };
    let mut xattrs = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(sys(e)),
            }
        };
        value.truncate(len);
        xattrs.push((name.to_vec(), value));
    }
    xattrs.sort();
    Ok(xattrs)
}

fn add_children<W: Write + Seek>(
    writer: &mut ImageWriter<W>,
    dir: &Path,
    rel: &mut Vec<Vec<u8>>,
    links: &mut HashMap<(u64, u64), Vec<Vec<u8>>>,
) -> Result<(), ImageError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| at(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| at(dir, e))?;
    entries.sort();
    for name in entries {
        let path = dir.join(&name);
        let m = std::fs::symlink_metadata(&path).map_err(|e| at(&path, e))?;
        rel.push(name.as_bytes().to_vec());
        let names: Vec<&[u8]> = rel.iter().map(Vec::as_slice).collect();
        let ft = m.file_type();
        if ft.is_dir() {
            writer.add_dir(&names, meta_of(&path, &m)?)?;
            add_children(writer, &path, rel, links)?;
        } else if ft.is_file() {
            let first = (m.nlink() > 1)
                .then(|| links.get(&(m.dev(), m.ino())))
                .flatten();
            if let Some(first) = first {
                let target: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
                writer.add_hard_link(&names, &target)?;
            } else {
                let mut file = File::open(&path).map_err(|e| at(&path, e))?;
                writer.add_file(&names, m.len(), &mut file, meta_of(&path, &m)?)?;
                if m.nlink() > 1 {
                    links.insert((m.dev(), m.ino()), rel.clone());
                }
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| at(&path, e))?;
            writer.add_symlink(
                &names,
                OsStr::as_bytes(target.as_os_str()),
                meta_of(&path, &m)?,
            )?;
        } else {
            writer.add_special(&names, m.rdev(), meta_of(&path, &m)?)?;
        }
        rel.pop();
    }
    Ok(())
}
