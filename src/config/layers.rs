//! Stacking defaults, file and environment with the `config` crate, and remembering which layer
//! set each key: `config` reports type errors without the file, and semantic problems are found
//! after loading, yet both must point the operator at the right file and line.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use config::{Environment, File, FileFormat, Map, Source, Value};

use super::{Config, ConfigError, ENV_PREFIX, Origin, Place};

/// `[[trunk]]`, `[[route]]`, `[[did]]`.
const TABLE_ARRAYS: [&str; 3] = ["trunk", "route", "did"];

/// Keys whose default is an empty list, which the serialized defaults leave out.
const EMPTY_LISTS: [&str; 1] = ["media.rtpengine"];

/// Keys whose environment value is split at commas.
const LIST_KEYS: [&str; 9] = [
    "server.domains",
    "listen.udp",
    "listen.tcp",
    "listen.tls",
    "listen.ws",
    "listen.wss",
    "websocket.paths",
    "registrar.digest_algorithms",
    "dns.servers",
];

#[derive(Debug, Clone, Default)]
pub(super) struct Provenance {
    file: Option<PathBuf>,
    /// Keys (and sections) the file sets, with the line of each when it could be found.
    file_keys: BTreeMap<String, Option<u32>>,
    env_keys: BTreeSet<String>,
}

/// Where a value came from is not part of what it is: two configs with equal values are equal.
impl PartialEq for Provenance {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Provenance {}

impl Provenance {
    /// The layer that set `key` last; `listen.udp[1]` is looked up as `listen.udp`.
    pub(super) fn place(&self, key: &str) -> Place {
        let base = key.split('[').next().unwrap_or(key);
        let (origin, line) = match (&self.file, self.file_keys.get(base)) {
            _ if self.env_keys.contains(base) => (Origin::Environment, None),
            (Some(path), Some(line)) => (Origin::File(path.clone()), *line),
            _ => (Origin::Defaults, None),
        };
        Place { origin, key: key.into(), line }
    }
}

/// The layers stacked and typed, or every structural problem found (never an empty list).
pub(super) fn load(file: Option<&Path>, with_env: bool) -> Result<Config, Vec<ConfigError>> {
    let mut provenance = Provenance { file: file.map(Path::to_path_buf), ..Provenance::default() };
    let mut problems = Vec::new();

    // Serializing the defaults, rather than one `set_default` per key, keeps a single list of them,
    // and makes it the list of known keys too. Only a non-UTF-8 `server.state_dir` can fail here.
    let defaults = config::Config::try_from(&Config::default()).map_err(typing(&provenance))?;
    let mut known = keys(defaults.collect().map_err(typing(&provenance))?);
    // Arrays of tables are empty by default, so the defaults do not show them; their
    // elements' fields are checked by serde's deny_unknown_fields.
    known.extend(TABLE_ARRAYS.iter().chain(&EMPTY_LISTS).map(|k| (*k).to_string()));
    let mut builder = config::Config::builder().add_source(defaults);

    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|source| vec![ConfigError::Unreadable { path: path.into(), source }])?;
        let source = File::from_str(&text, FileFormat::Toml);
        let table =
            source.collect().map_err(|e| vec![ConfigError::Syntax { path: path.into(), reason: e.to_string() }])?;
        for key in keys(table) {
            provenance.file_keys.insert(key.clone(), line_of(&text, &key));
        }
        let mut unknown: Vec<_> = provenance.file_keys.iter().filter(|(key, _)| is_unknown(key, &known)).collect();
        unknown.sort_by_key(|&(_, line)| *line);
        for (key, &line) in unknown {
            let place = Place { origin: Origin::File(path.into()), key: key.clone(), line };
            problems.push(ConfigError::UnknownKey { place });
        }
        builder = builder.add_source(source);
    }

    if with_env {
        let prefix = format!("{}__", ENV_PREFIX.to_lowercase());
        let (mut vars, mut emptied) = (Map::new(), Vec::new());
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.into_string().ok().filter(|name| name.to_lowercase().starts_with(&prefix)) else {
                continue;
            };
            let key = name[prefix.len()..].to_lowercase().replace("__", ".");
            let place = Place { origin: Origin::Environment, key: key.clone(), line: None };
            match value.into_string() {
                _ if is_unknown(&key, &known) => problems.push(ConfigError::UnknownKey { place }),
                Err(_) => problems.push(ConfigError::BadValue { place, reason: "not valid UTF-8".into() }),
                // Splitting "" would give [""]; an empty variable means an empty list, as `[]` does.
                Ok(value) if value.is_empty() && LIST_KEYS.contains(&key.as_str()) => emptied.push(key.clone()),
                Ok(value) => {
                    vars.insert(name, value);
                }
            }
            provenance.env_keys.insert(key);
        }
        let environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        let environment = LIST_KEYS.iter().fold(environment, |env, key| env.with_list_parse_key(key));
        builder = builder.add_source(environment.source(Some(vars)));
        for key in emptied {
            builder = builder.set_override(key, Vec::<String>::new()).map_err(typing(&provenance))?;
        }
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let mut config: Config = builder.build().and_then(config::Config::try_deserialize).map_err(typing(&provenance))?;
    config.provenance = provenance;
    Ok(config)
}

fn typing(provenance: &Provenance) -> impl Fn(config::ConfigError) -> Vec<ConfigError> + '_ {
    |error| vec![typing_error(error, provenance)]
}

/// `config` reports a value that does not fit its type with the key but not the layer.
fn typing_error(error: config::ConfigError, provenance: &Provenance) -> ConfigError {
    use config::ConfigError as E;
    let (key, reason) = match error {
        E::Type { unexpected, expected, key, .. } => (key, format!("invalid type: {unexpected}, expected {expected}")),
        E::At { error, key, .. } => (key, error.to_string()),
        E::NotFound(key) => (Some(key), "missing".into()),
        other => (None, other.to_string()),
    };
    // Without a key the only value that can fail is the one the defaults take from the environment.
    let key = key.unwrap_or_else(|| "server.state_dir".into());
    ConfigError::BadValue { place: provenance.place(&key), reason }
}

/// Sections and `section.key` paths, one level deep as the schema is.
fn keys(table: Map<String, Value>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (section, value) in table {
        if let Ok(inner) = value.into_table() {
            keys.extend(inner.into_keys().map(|key| format!("{section}.{key}")));
        }
        keys.insert(section);
    }
    keys
}

/// Keys inside an unknown section are not reported again: the section is.
fn is_unknown(key: &str, known: &BTreeSet<String>) -> bool {
    !known.contains(key) && key.rsplit_once('.').is_none_or(|(section, _)| known.contains(section))
}

/// Best effort, for `[section]` headers and `key = value` lines, the way conf/webtrunk.toml is
/// written; dotted keys and inline tables give no line.
fn line_of(text: &str, key: &str) -> Option<u32> {
    let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = "";
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let found = if let Some(header) = line.strip_prefix('[') {
            current = header.split(']').next().unwrap_or_default().trim();
            section.is_empty() && current == leaf
        } else {
            current == section && line.strip_prefix(leaf).is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        if found {
            return u32::try_from(index + 1).ok();
        }
    }
    None
}
