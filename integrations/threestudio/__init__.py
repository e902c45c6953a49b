"""msdfast as a threestudio extension: copy or link this folder into threestudio's `custom/`.

    ln -s /path/to/msdfast/integrations/threestudio /path/to/threestudio/custom/msdfast
    python launch.py --config custom/msdfast/configs/msd.yaml --train --gpu 0 system.prompt_processor.prompt="..."

threestudio's launch.py imports this package (load_custom_modules); it registers `msdfast-guidance`
(importing twice is harmless). A stock config switches by changing only `system.guidance_type` to
"msdfast-guidance": its guidance block loads unchanged (msdfast.adapters.threestudio.translate_config).
"""
from msdfast.adapters.threestudio import register_with_threestudio

MSDFastThreestudioGuidance = register_with_threestudio("msdfast-guidance")
