import ArgumentParser
import GradScope
import HDF5

extension LayoutKind: ExpressibleByArgument {}

/// Options every reading command shares.
struct ReadingOptions: ParsableArguments {
    @Option(name: .long, help: "Read files as this layout instead of detecting it: native, keras3, keras-legacy or generic.")
    var layout: LayoutKind?

    @Flag(name: .long, help: "Follow soft and external links and read external-storage and virtual datasets (only for files you trust).")
    var followLinks = false

    @Flag(name: .long, help: "Load HDF5 filter plugins from HDF5_PLUGIN_PATH (only for files you trust).")
    var allowPlugins = false

    var loadOptions: LoadOptions {
        LoadOptions(layout: layout, open: OpenOptions(followLinks: followLinks, allowPlugins: allowPlugins))
    }
}
