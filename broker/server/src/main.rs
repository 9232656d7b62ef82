//! The `halyard` binary: see `halyard --help`.

/// jemalloc instead of glibc's allocator: the data plane allocates on one I/O thread and frees
/// on another (messages, delivery batches handed between threads), which glibc's arenas pay
/// for with locks and chunk consolidation (see benches/RESULTS.md, "Thread scaling").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    halyard_server::cli::main()
}
