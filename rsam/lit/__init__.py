"""Lightning side of rsam: the training module, the official parameter groups, the wandb panel, recipe builders.

``rsam.models`` stays free of Lightning; everything that needs ``lightning`` lives here.
"""

from rsam.lit.module import RemoteSAMModule, poly_factor
from rsam.lit.param_groups import official_param_groups, parameter_group

__all__ = ["RemoteSAMModule", "official_param_groups", "parameter_group", "poly_factor"]
