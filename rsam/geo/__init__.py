"""Earth-observation inference on rasters of any size: windowed reading, one scaling rule per scene, tiled
prediction with blended seams, georeferenced GeoTIFF output written window by window, instances merged across tile
seams and vectors in the raster's CRS. Plain Python / NumPy / rasterio / shapely; no Lightning here (the multi-device
predict lives in :mod:`rsam.lit.geo`)."""
