"""rsam: RemoteSAM (RMSIN) as a distributed training and evaluation platform."""

__version__ = "0.1.0"
