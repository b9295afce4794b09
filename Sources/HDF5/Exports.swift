@_exported import ElementTypes
