from brandvx.cli import main

main()
