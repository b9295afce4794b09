// The library as one import: every layer of gradscope, bottom to top.
@_exported import ElementTypes
@_exported import GradScopeDiagnosis
@_exported import GradScopeMeasurement
@_exported import GradScopeModel
@_exported import GradScopeRendering
@_exported import GradScopeSources
@_exported import GradScopeStatistics
@_exported import HDF5
