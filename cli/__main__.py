from edgempir.cli import main

main()
