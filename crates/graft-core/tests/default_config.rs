//! config/graft.toml is the documented default: it must load, and every value in it must be the
//! built-in default (the file says "a key left out keeps the value shown here").

use std::path::Path;

use graft_core::Config;

#[test]
fn the_shipped_config_loads_and_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/graft.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = Config::from_toml(&text, &path).unwrap();
    let defaults = Config::from_toml("", &path).unwrap();
    // The kit folder is the one deliberate difference: the repository's root, not config/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(shipped.kit.dir.ends_with(".kit") && !shipped.kit.dir.ends_with("config/.kit"));
    assert_eq!(
        std::fs::canonicalize(shipped.kit.dir.parent().unwrap()).unwrap(),
        std::fs::canonicalize(&root).unwrap()
    );
    assert!(defaults.kit.dir.ends_with("config/.kit"));
    assert_eq!(format!("{:?}", shipped.server), format!("{:?}", defaults.server));
    assert_eq!(format!("{:?}", shipped.model), format!("{:?}", defaults.model));
    assert_eq!(format!("{:?}", shipped.generation), format!("{:?}", defaults.generation));

    // Index settings match too, except the folder, which is the repository's `index/`.
    assert_eq!(
        std::fs::canonicalize(shipped.index.dir.parent().unwrap()).unwrap(),
        std::fs::canonicalize(&root).unwrap()
    );
    assert!(shipped.index.dir.ends_with("index"));
    let mut shipped_index = shipped.index.clone();
    shipped_index.dir = defaults.index.dir.clone();
    assert_eq!(format!("{shipped_index:?}"), format!("{:?}", defaults.index));

    // Adapter settings match too, except the folders, which are the repository's.
    assert!(shipped.adapters.dir.ends_with("adapters") && shipped.adapters.cache_dir.ends_with(".cache/merged"));
    assert_eq!(shipped.adapters.max_rank, defaults.adapters.max_rank);
    assert_eq!(shipped.adapters.merged_type, defaults.adapters.merged_type);

    // The shipped config serves graft's own repository as a project.
    assert!(defaults.projects.is_empty());
    let graft = shipped.project("graft").expect("the graft project");
    assert_eq!(std::fs::canonicalize(&graft.path).unwrap(), std::fs::canonicalize(&root).unwrap());
}
