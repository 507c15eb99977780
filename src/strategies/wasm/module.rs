//! Loading a module: everything that can be checked before a strategy runs is checked here, once, and the
//! compiled module is shared by its instances.
//!
//! In order: the size (before a byte is parsed), validation and eager compilation under wasmi's strict
//! parse limits (so a hostile module's cost is paid at load, not on the first bar), the imports (only
//! [`super::host::IMPORTS`], with their exact signatures), the exports of interface v1 with their
//! signatures, the declared memory, and a dry instantiation under fuel that runs the start function and
//! asks `trellis_interface_version()`.

use std::sync::Arc;

use wasmi::{
    CompilationMode, Config, EnforcedLimits, Engine, ExternType, FuncType, Instance, Module, Store,
    StoreLimitsBuilder, ValType,
};

use super::host::{self, HostState, IMPORTS, NAMESPACE};
use super::{WasmError, WasmLimits, WasmManifest, INTERFACE_VERSION};

/// A WebAssembly page.
const PAGE: u64 = 64 * 1024;

/// The exports of interface v1: name, required, parameters, results, and the signature as a refusal
/// names it.
type ExportSpec = (
    &'static str,
    bool,
    &'static [ValType],
    &'static [ValType],
    &'static str,
);

use ValType::{F64, I32, I64};

pub(super) const EXPORTS: &[ExportSpec] = &[
    (
        "trellis_interface_version",
        true,
        &[],
        &[I32],
        "a function () -> i32",
    ),
    (
        "on_bar",
        true,
        &[F64, F64, F64, F64, I64, I64],
        &[I32],
        "a function (f64, f64, f64, f64, i64, i64) -> i32",
    ),
    (
        "on_tick",
        false,
        &[F64, F64, I64],
        &[I32],
        "a function (f64, f64, i64) -> i32",
    ),
    (
        "on_fill",
        false,
        &[F64, F64],
        &[],
        "a function (f64, f64) -> ()",
    ),
    (
        "param",
        false,
        &[I32, F64],
        &[],
        "a function (i32, f64) -> ()",
    ),
    ("init", false, &[], &[I32], "a function () -> i32"),
    ("warm_up_bars", false, &[], &[I32], "a function () -> i32"),
];

/// A validated, compiled module, shared by the instances of the strategies built from it.
pub struct WasmModule {
    pub(super) engine: Engine,
    pub(super) module: Module,
    pub(super) manifest: WasmManifest,
    pub(super) limits: WasmLimits,
    /// Seed of every instance's `trellis.random`.
    pub(super) seed: u64,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("manifest", &self.manifest)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl WasmModule {
    /// Validates and compiles `bytes` (a binary module; text is not accepted) with its manifest.
    pub fn load(
        bytes: &[u8],
        manifest: WasmManifest,
        limits: WasmLimits,
    ) -> Result<Arc<Self>, WasmError> {
        if bytes.len() > limits.max_module_bytes {
            return Err(WasmError::TooLarge {
                bytes: bytes.len(),
                limit: limits.max_module_bytes,
            });
        }
        manifest.validate()?;
        let engine = Engine::new(&config());
        let module = Module::new(&engine, bytes).map_err(|e| WasmError::Invalid(e.to_string()))?;
        check_imports(&module)?;
        check_exports(&module, &limits)?;
        let loaded = Arc::new(Self {
            engine,
            module,
            manifest,
            limits,
            seed: host::seed_of(bytes),
        });
        let (mut store, instance) = loaded
            .instantiate("load")
            .map_err(|e| WasmError::Start(e.to_string()))?;
        let version = instance
            .get_typed_func::<(), i32>(&store, "trellis_interface_version")
            .and_then(|f| f.call(&mut store, ()))
            .map_err(|e| WasmError::Start(format!("trellis_interface_version(): {e}")))?;
        if version != INTERFACE_VERSION {
            return Err(WasmError::InterfaceVersion { found: version });
        }
        Ok(loaded)
    }

    /// The parameters of the manifest.
    pub fn manifest(&self) -> &WasmManifest {
        &self.manifest
    }

    pub fn limits(&self) -> WasmLimits {
        self.limits
    }

    /// A fresh instance in a store of its own: limits installed, the start function run under one call's
    /// fuel.
    pub(super) fn instantiate(
        &self,
        kind: &str,
    ) -> Result<(Store<HostState>, Instance), wasmi::Error> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory_bytes)
            .memories(1)
            .tables(1)
            .table_elements(10_000)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostState::new(limits, self.seed, kind));
        store.limiter(|state| &mut state.limits);
        store.set_fuel(self.limits.fuel_per_call)?;
        let instance =
            host::linker(&self.engine)?.instantiate_and_start(&mut store, &self.module)?;
        Ok((store, instance))
    }
}

/// The engine of untrusted modules: fuel on, eager compilation, strict parse limits, and only the
/// proposals a strategy needs (no 64-bit or multiple memories, no reference types, no SIMD).
fn config() -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .enforced_limits(EnforcedLimits::strict())
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .wasm_reference_types(false)
        .wasm_custom_page_sizes(false);
    config
}

fn signature_is(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    ty.params() == params && ty.results() == results
}

fn check_imports(module: &Module) -> Result<(), WasmError> {
    for import in module.imports() {
        let forbidden = || WasmError::ForbiddenImport {
            module: import.module().to_owned(),
            name: import.name().to_owned(),
        };
        if import.module() != NAMESPACE {
            return Err(forbidden());
        }
        let Some(&(_, params, results, expected)) =
            IMPORTS.iter().find(|(name, ..)| *name == import.name())
        else {
            return Err(forbidden());
        };
        match import.ty() {
            ExternType::Func(ty) if signature_is(ty, params, results) => {}
            _ => {
                return Err(WasmError::ImportType {
                    name: format!("{NAMESPACE}.{}", import.name()),
                    expected,
                })
            }
        }
    }
    Ok(())
}

fn check_exports(module: &Module, limits: &WasmLimits) -> Result<(), WasmError> {
    match module.get_export("memory") {
        Some(ExternType::Memory(ty)) => {
            let limit = limits.max_memory_bytes;
            let initial = ty.minimum().saturating_mul(PAGE);
            if initial > limit as u64 {
                return Err(WasmError::Memory {
                    what: "an initial memory",
                    bytes: initial,
                    limit,
                });
            }
            if let Some(max) = ty.maximum().map(|p| p.saturating_mul(PAGE)) {
                if max > limit as u64 {
                    return Err(WasmError::Memory {
                        what: "a maximum memory",
                        bytes: max,
                        limit,
                    });
                }
            }
        }
        Some(_) => {
            return Err(WasmError::ExportType {
                name: "memory".into(),
                expected: "a memory",
            })
        }
        None => {
            return Err(WasmError::MissingExport {
                name: "memory".into(),
                expected: "a memory",
            })
        }
    }
    for &(name, required, params, results, expected) in EXPORTS {
        match module.get_export(name) {
            Some(ExternType::Func(ty)) if signature_is(&ty, params, results) => {}
            Some(_) => {
                return Err(WasmError::ExportType {
                    name: name.to_owned(),
                    expected,
                })
            }
            None if required => {
                return Err(WasmError::MissingExport {
                    name: name.to_owned(),
                    expected,
                })
            }
            None => {}
        }
    }
    Ok(())
}
