//! Loading a config directory: every `*.yaml` / `*.yml` file, then the
//! checks across files (duplicates, missing dependencies, cycles). A valid
//! file that depends on an invalid one stays valid: its service waits.

use super::{ConfigError, MAX_FILE_SIZE, ServiceConfig, parse_service};
use crate::graph;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a directory holds: the valid services and, by name, the errors of
/// the files (or dependencies) that are not.
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    /// Valid services by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Invalid services by name, with every problem found.
    pub invalid: BTreeMap<String, Vec<ConfigError>>,
}

impl ConfigSet {
    /// Every error, ordered by service name.
    pub fn errors(&self) -> Vec<ConfigError> {
        self.invalid.values().flatten().cloned().collect()
    }

    /// Every warning of the valid services, and each valid service that
    /// will wait for a dependency whose file is invalid.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .values()
            .flat_map(|s| s.warnings.iter().cloned())
            .collect();
        for service in self.services.values() {
            for dep in service
                .after
                .iter()
                .filter(|d| self.invalid.contains_key(*d))
            {
                out.push(format!(
                    "{}: {} will wait for {dep}, whose service file is invalid",
                    service.file.display(),
                    service.name
                ));
            }
        }
        out
    }
}

fn is_service_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Reads and validates one service file; its stem is the service name.
pub fn parse_file(path: &Path) -> Result<ServiceConfig, Vec<ConfigError>> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !is_service_file(path) {
        return Err(vec![ConfigError::file(
            path,
            "a service file's name ends in .yaml or .yml",
        )]);
    }
    let text = read_bounded(path).map_err(|e| vec![ConfigError::file(path, e)])?;
    parse_service(path, &name, &text)
}

/// Reads a service file, refusing more than `MAX_FILE_SIZE` bytes.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE_SIZE as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if text.len() > MAX_FILE_SIZE {
        return Err(format!(
            "the file is larger than {MAX_FILE_SIZE} bytes; a service file may have at most that"
        ));
    }
    Ok(text)
}

/// Why a directory entry cannot be a service file, if it cannot: a link
/// that leads nowhere or out of the directory, or something other than a
/// regular file.
fn unusable(path: &Path, dir: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let Ok(resolved) = std::fs::canonicalize(path) else {
            return Some(format!("a link to {target}, which does not exist"));
        };
        let inside = std::fs::canonicalize(dir).is_ok_and(|d| resolved.starts_with(d));
        if !inside {
            return Some(format!(
                "a link to {target}, outside the config directory (links must stay inside it)"
            ));
        }
        if !resolved.is_file() {
            return Some(format!("a link to {target}, which is not a regular file"));
        }
        return None;
    }
    (!meta.is_file()).then(|| "not a regular file".to_string())
}

/// Loads every service file in `dir`. Fails only when the directory itself
/// cannot be read; problems in files land in [`ConfigSet::invalid`].
pub fn load_dir(dir: &Path) -> Result<ConfigSet, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::file(dir, format!("cannot read the config directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_service_file(p))
        .collect();
    files.sort();

    let mut set = ConfigSet::default();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(first) = seen.get(&name) {
            let error = ConfigError::file(
                &path,
                format!(
                    "duplicate service {name:?}: {} defines it too",
                    first.display()
                ),
            );
            set.services.remove(&name);
            set.invalid.entry(name).or_default().push(error);
            continue;
        }
        seen.insert(name.clone(), path.clone());
        if let Some(why) = unusable(&path, dir) {
            set.invalid
                .entry(name)
                .or_default()
                .push(ConfigError::file(&path, why));
            continue;
        }
        match parse_file(&path) {
            Ok(service) => {
                set.services.insert(name, service);
            }
            Err(errors) => {
                set.invalid.entry(name).or_default().extend(errors);
            }
        }
    }
    check_dependencies(&mut set);
    Ok(set)
}

/// Marks services whose dependencies are missing (no file at all) or in a
/// cycle as invalid. A dependency whose file is invalid is no error of the
/// service that depends on it: that one waits for it (blocked), and
/// [`ConfigSet::warnings`] says so.
pub(crate) fn check_dependencies(set: &mut ConfigSet) {
    let mut broken: Vec<(String, ConfigError)> = Vec::new();
    for service in set.services.values() {
        for dep in &service.after {
            if set.services.contains_key(dep) || set.invalid.contains_key(dep) {
                continue;
            }
            let line = service
                .source
                .lines()
                .position(|l| l.contains(dep.as_str()))
                .map(|i| i + 1);
            broken.push((
                service.name.clone(),
                ConfigError::field(
                    &service.file,
                    "after",
                    Some(format!("{dep:?}")),
                    "depends on a service that does not exist",
                )
                .at_line(line),
            ));
        }
    }
    for (name, error) in broken {
        set.services.remove(&name);
        set.invalid.entry(name).or_default().push(error);
    }
    let deps: BTreeMap<String, Vec<String>> = set
        .services
        .iter()
        .map(|(name, s)| (name.clone(), s.after.clone()))
        .collect();
    for cycle in graph::cycles(&deps) {
        let shown = format!("{} -> {}", cycle.join(" -> "), cycle[0]);
        for name in &cycle {
            if let Some(service) = set.services.remove(name) {
                let error = ConfigError::field(
                    &service.file,
                    "after",
                    None,
                    format!("dependency cycle: {shown}"),
                );
                set.invalid.entry(name.clone()).or_default().push(error);
            }
        }
    }
}
